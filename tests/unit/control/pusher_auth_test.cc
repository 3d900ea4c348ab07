#include "control/pusher_auth.h"


#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace switchboard::control {
namespace {

constexpr char kEmptyMd5[] = "d41d8cd98f00b204e9800998ecf8427e";
const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

class PusherAuthTest : public ::testing::Test {
 protected:
  PusherAuthTest() {
    auto* a = config_.add_apps();
    a->set_id("demo");
    a->set_key("demo-key");
    a->set_secret("demo-secret-123");
    a = config_.add_apps();
    a->set_id("other");
    a->set_key("other-key");
    a->set_secret("other-secret-456");
  }

  // Signs as a Pusher server SDK does (the reference: the documented algorithm,
  // recomputed here with OpenSSL's HMAC through PusherSignature).
  HttpRequestInfo Signed(const std::string& method, const std::string& path, const std::string& key,
                         const std::string& secret, int64_t ts, const std::string& body_md5 = kEmptyMd5) {
    std::string params = absl::StrCat("auth_key=", key, "&auth_timestamp=", ts, "&auth_version=1.0");
    if (!body_md5.empty()) params = absl::StrCat("auth_key=", key, "&auth_timestamp=", ts,
                                                 "&auth_version=1.0&body_md5=", body_md5);
    HttpRequestInfo http;
    http.method = method;
    http.path = path;
    http.body_md5 = kEmptyMd5;
    http.raw_query = params + "&auth_signature=" + PusherSignature(secret, method, path, params);
    return http;
  }

  absl::Status Verify(const std::string& app, const HttpRequestInfo& http,
                      const std::string& path = "/apps/demo/users/42/terminate_connections") {
    return VerifyPusherSignature(config_, app, "POST", path, http, kNow);
  }

  v1::Config config_;
  const std::string path_ = "/apps/demo/users/42/terminate_connections";
};

TEST_F(PusherAuthTest, KnownVector) {
  // From Pusher's REST API authentication documentation.
  EXPECT_EQ(PusherSignature("7ad3773142a6692b25b8", "POST", "/apps/3/events",
                            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0"
                            "&body_md5=ec365a775a4cd0599faeb73354201b6f"),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c");
}

TEST_F(PusherAuthTest, AcceptsValidSignature) {
  EXPECT_TRUE(Verify("demo", Signed("POST", path_, "demo-key", "demo-secret-123", 1'800'000'000)).ok());
  // Within 600 s either way.
  EXPECT_TRUE(Verify("demo", Signed("POST", path_, "demo-key", "demo-secret-123", 1'800'000'000 - 599)).ok());
  EXPECT_TRUE(Verify("demo", Signed("POST", path_, "demo-key", "demo-secret-123", 1'800'000'000 + 599)).ok());
}

TEST_F(PusherAuthTest, GetWithoutBodyMd5IsAccepted) {
  const std::string path = "/apps/demo/users/42/connections";
  auto http = Signed("GET", path, "demo-key", "demo-secret-123", 1'800'000'000, "");
  EXPECT_TRUE(VerifyPusherSignature(config_, "demo", "GET", path, http, kNow).ok());
}

TEST_F(PusherAuthTest, EmptyPostBodyMayOmitBodyMd5) {
  // Sockudo / Pusher SDKs: body_md5 "might be omitted" for an empty body.
  auto http = Signed("POST", path_, "demo-key", "demo-secret-123", 1'800'000'000, "");
  EXPECT_TRUE(Verify("demo", http).ok());
  // Still bound to path, key and timestamp.
  EXPECT_EQ(Verify("demo", http, "/apps/demo/users/43/terminate_connections").code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Verify("demo", Signed("POST", path_, "other-key", "demo-secret-123", 1'800'000'000, "")).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Verify("demo", Signed("POST", path_, "demo-key", "demo-secret-123", 1'800'000'000 - 601, "")).code(),
            absl::StatusCode::kUnauthenticated);
  // A body that is not empty must be covered by body_md5.
  auto with_body = http;
  with_body.body_md5 = "0123456789abcdef0123456789abcdef";
  EXPECT_EQ(Verify("demo", with_body).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PusherAuthTest, SignatureForOneAppNeverAuthorizesAnother) {
  // Signed correctly for "other", presented on a call for "demo".
  auto http = Signed("POST", "/apps/other/users/42/terminate_connections", "other-key", "other-secret-456",
                     1'800'000'000);
  EXPECT_EQ(Verify("demo", http).code(), absl::StatusCode::kUnauthenticated);
  // The demo key signed with the other app's secret.
  EXPECT_EQ(Verify("demo", Signed("POST", path_, "demo-key", "other-secret-456", 1'800'000'000)).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(PusherAuthTest, RejectsStaleAndFutureTimestamps) {
  EXPECT_EQ(Verify("demo", Signed("POST", path_, "demo-key", "demo-secret-123", 1'800'000'000 - 601)).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Verify("demo", Signed("POST", path_, "demo-key", "demo-secret-123", 1'800'000'000 + 601)).code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(PusherAuthTest, RejectsTamperedPathMethodAndBody) {
  auto http = Signed("POST", path_, "demo-key", "demo-secret-123", 1'800'000'000);
  // Signed for user 42, used on user 43.
  EXPECT_EQ(Verify("demo", http, "/apps/demo/users/43/terminate_connections").code(),
            absl::StatusCode::kUnauthenticated);
  auto moved = http;
  moved.path = "/apps/demo/users/43/terminate_connections";
  EXPECT_EQ(Verify("demo", moved, moved.path).code(), absl::StatusCode::kUnauthenticated);
  auto get = http;
  get.method = "GET";
  EXPECT_EQ(Verify("demo", get).code(), absl::StatusCode::kUnauthenticated);
  auto body = http;
  body.body_md5 = "0123456789abcdef0123456789abcdef";
  EXPECT_EQ(Verify("demo", body).code(), absl::StatusCode::kUnauthenticated);
  auto sig = http;
  sig.raw_query.back() = sig.raw_query.back() == '0' ? '1' : '0';
  EXPECT_EQ(Verify("demo", sig).code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(PusherAuthTest, MissingParametersAreBadRequests) {
  auto http = Signed("POST", path_, "demo-key", "demo-secret-123", 1'800'000'000);
  for (const char* drop : {"auth_key=", "auth_timestamp=", "auth_version=", "auth_signature="}) {
    HttpRequestInfo h = http;
    size_t at = h.raw_query.find(drop);
    size_t end = h.raw_query.find('&', at);
    h.raw_query.erase(at, end == std::string::npos ? std::string::npos : end - at + 1);
    EXPECT_EQ(Verify("demo", h).code(), absl::StatusCode::kInvalidArgument) << drop << " " << h.raw_query;
  }
  HttpRequestInfo dup = http;
  dup.raw_query += "&auth_key=demo-key";
  EXPECT_EQ(Verify("demo", dup).code(), absl::StatusCode::kInvalidArgument);
  HttpRequestInfo bad = http;
  bad.raw_query += "&x=%zz";
  EXPECT_EQ(Verify("demo", bad).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PusherAuthTest, WrongVersionOrGarbageTimestampIsUnauthenticated) {
  auto http = Signed("POST", path_, "demo-key", "demo-secret-123", 1'800'000'000);
  HttpRequestInfo v = http;
  v.raw_query.replace(v.raw_query.find("auth_version=1.0"), 16, "auth_version=2.0");
  EXPECT_EQ(Verify("demo", v).code(), absl::StatusCode::kUnauthenticated);
  HttpRequestInfo t = http;
  t.raw_query.replace(t.raw_query.find("auth_timestamp="), 25, "auth_timestamp=abcdefghij");
  EXPECT_EQ(Verify("demo", t).code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(PusherAuthTest, UnknownAppIsNotFound) {
  auto http = Signed("POST", "/apps/nope/users/42/terminate_connections", "demo-key", "demo-secret-123",
                     1'800'000'000);
  EXPECT_EQ(Verify("nope", http, "/apps/nope/users/42/terminate_connections").code(),
            absl::StatusCode::kNotFound);
}

TEST(UrlDecode, DecodesAndRejectsBadEscapes) {
  std::string out;
  EXPECT_TRUE(UrlDecode("a%20b+c%2Fd", &out));
  EXPECT_EQ(out, "a b c/d");
  EXPECT_FALSE(UrlDecode("%", &out));
  EXPECT_FALSE(UrlDecode("%4", &out));
  EXPECT_FALSE(UrlDecode("%g0", &out));
}

}  // namespace
}  // namespace switchboard::control
