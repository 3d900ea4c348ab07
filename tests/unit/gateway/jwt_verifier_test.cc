#include "gateway/jwt_verifier.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/tokens.h"

namespace switchboard::gateway {
namespace {

using ::switchboard::testing::MakeToken;

constexpr char kSecret[] = "unit-test-secret";
const TokenPolicy kPolicy{kSecret, "", ""};
const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

TEST(JwtVerifier, AcceptsValidTokenAndReadsClaims) {
  std::string token = MakeToken(
      R"({"sub":"42","exp":1800000100,"info":{"name":"Ann"},"meta":{"plan":"pro"}})", kSecret);
  auto r = JwtVerifier::Verify(token, kPolicy, kNow);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.claims.sub, "42");
  EXPECT_EQ(r.claims.expires_at, absl::FromUnixSeconds(1800000100));
  EXPECT_NE(r.claims.info_json.find("Ann"), std::string::npos);
  EXPECT_NE(r.claims.meta_json.find("pro"), std::string::npos);
}

TEST(JwtVerifier, TokenWithoutExpNeverExpires) {
  auto r = JwtVerifier::Verify(MakeToken(R"({"sub":"7"})", kSecret), kPolicy, kNow);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.claims.expires_at, absl::InfiniteFuture());
  EXPECT_EQ(r.claims.meta_json, "");
}

TEST(JwtVerifier, RejectsBadSignature) {
  auto r = JwtVerifier::Verify(MakeToken(R"({"sub":"42"})", "another-secret"), kPolicy, kNow);
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.error, TokenError::kInvalid);
}

TEST(JwtVerifier, RejectsTamperedPayload) {
  std::string token = MakeToken(R"({"sub":"42"})", kSecret);
  std::string other = MakeToken(R"({"sub":"43"})", kSecret);
  // Header of one, payload of another, signature of the first.
  size_t a1 = token.find('.'), a2 = token.rfind('.');
  size_t b1 = other.find('.'), b2 = other.rfind('.');
  std::string forged = token.substr(0, a1) + other.substr(b1, b2 - b1) + token.substr(a2);
  EXPECT_FALSE(JwtVerifier::Verify(forged, kPolicy, kNow).status.ok());
}

TEST(JwtVerifier, ReportsExpiredSeparately) {
  std::string token = MakeToken(absl::StrCat(R"({"sub":"42","exp":)", 1'800'000'000 - 1, "}"), kSecret);
  auto r = JwtVerifier::Verify(token, kPolicy, kNow);
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.error, TokenError::kExpired);
}

TEST(JwtVerifier, RejectsOtherAlgorithms) {
  EXPECT_FALSE(JwtVerifier::Verify(MakeToken(R"({"sub":"42"})", kSecret, JWT_ALG_HS512), kPolicy, kNow).status.ok());
  EXPECT_FALSE(JwtVerifier::Verify(MakeToken(R"({"sub":"42"})", kSecret, JWT_ALG_HS384), kPolicy, kNow).status.ok());
}

TEST(JwtVerifier, RejectsUnsignedToken) {
  std::string token = MakeToken(R"({"sub":"42"})", "", JWT_ALG_NONE);
  ASSERT_FALSE(token.empty());
  EXPECT_FALSE(JwtVerifier::Verify(token, kPolicy, kNow).status.ok());
}

TEST(JwtVerifier, RejectsMissingOrNonStringSub) {
  EXPECT_FALSE(JwtVerifier::Verify(MakeToken(R"({"exp":1800000100})", kSecret), kPolicy, kNow).status.ok());
  EXPECT_FALSE(JwtVerifier::Verify(MakeToken(R"({"sub":42})", kSecret), kPolicy, kNow).status.ok());
}

TEST(JwtVerifier, RejectsGarbage) {
  for (const char* bad : {"", "abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9..", "\xff\xfe.\x01.x"}) {
    auto r = JwtVerifier::Verify(bad, kPolicy, kNow);
    EXPECT_FALSE(r.status.ok()) << bad;
    EXPECT_EQ(r.error, TokenError::kInvalid);
  }
  EXPECT_FALSE(JwtVerifier::Verify(std::string(20000, 'a'), kPolicy, kNow).status.ok());
}

TEST(JwtVerifier, ReadsNonIntegerNumericDates) {
  // RFC 7519 NumericDate: any JSON number. 1.9e9 is in 2030.
  auto r = JwtVerifier::Verify(MakeToken(R"({"sub":"42","exp":1.9e9})", kSecret), kPolicy, kNow);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.claims.expires_at, absl::FromUnixSeconds(1'900'000'000));
  r = JwtVerifier::Verify(MakeToken(R"({"sub":"42","exp":1800000000.5})", kSecret), kPolicy, kNow);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.claims.expires_at, kNow + absl::Milliseconds(500));
  r = JwtVerifier::Verify(MakeToken(R"({"sub":"42","exp":1799999999.5})", kSecret), kPolicy, kNow);
  EXPECT_EQ(r.error, TokenError::kExpired);
}

TEST(JwtVerifier, RejectsNonNumericDates) {
  for (const char* claims : {R"({"sub":"42","exp":"1900000000"})", R"({"sub":"42","nbf":true})",
                             R"({"sub":"42","iat":{}})", R"({"sub":"42","exp":null})"}) {
    auto r = JwtVerifier::Verify(MakeToken(claims, kSecret), kPolicy, kNow);
    EXPECT_FALSE(r.status.ok()) << claims;
    EXPECT_EQ(r.error, TokenError::kInvalid) << claims;
  }
}

TEST(JwtVerifier, HonoursNotBefore) {
  auto r = JwtVerifier::Verify(MakeToken(R"({"sub":"42","nbf":1800000010})", kSecret), kPolicy, kNow);
  EXPECT_EQ(r.error, TokenError::kNotYetValid);
  EXPECT_FALSE(r.status.ok());
  r = JwtVerifier::Verify(MakeToken(R"({"sub":"42","nbf":1800000000,"iat":1799999999.25})", kSecret), kPolicy, kNow);
  EXPECT_TRUE(r.status.ok()) << r.status;
}

TEST(JwtVerifier, ChecksAudienceAndIssuerOnlyWhenConfigured) {
  const TokenPolicy strict{kSecret, "chat", "https://auth.example"};
  auto ok = [&](const char* claims, const TokenPolicy& p) {
    return JwtVerifier::Verify(MakeToken(claims, kSecret), p, kNow);
  };
  EXPECT_TRUE(ok(R"({"sub":"1","aud":"chat","iss":"https://auth.example"})", strict).status.ok());
  EXPECT_TRUE(ok(R"({"sub":"1","aud":["x","chat"],"iss":"https://auth.example"})", strict).status.ok());
  EXPECT_EQ(ok(R"({"sub":"1","aud":"other","iss":"https://auth.example"})", strict).error, TokenError::kWrongAudience);
  EXPECT_EQ(ok(R"({"sub":"1","iss":"https://auth.example"})", strict).error, TokenError::kWrongAudience);
  EXPECT_EQ(ok(R"({"sub":"1","aud":"chat","iss":"evil"})", strict).error, TokenError::kWrongIssuer);
  EXPECT_EQ(ok(R"({"sub":"1","aud":"chat"})", strict).error, TokenError::kWrongIssuer);
  // Not configured: whatever the token says is fine.
  EXPECT_TRUE(ok(R"({"sub":"1","aud":"other","iss":"evil"})", kPolicy).status.ok());
}

}  // namespace
}  // namespace switchboard::gateway
