#include "gateway/hub.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gateway/centrifuge_codec.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "switchboard/v1/client.pb.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/gateway_config.h"
#include "nlohmann/json.hpp"
#include "tests/unit/testing/tokens.h"

namespace switchboard::gateway {
namespace {

using ::switchboard::testing::DemoGatewayConfig;
using ::switchboard::testing::kDemoSecret;
using ::switchboard::testing::MakeToken;

class FakeTransport : public Transport {
 public:
  struct Closed {
    int code;
    std::string reason;
  };
  bool Send(ConnId conn, std::string frame, bool) override {
    if (full.count(conn)) return false;  // an outbox that is full (the real one then closes as slow)
    sent[conn].push_back(std::move(frame));
    return true;
  }
  void Close(ConnId conn, int code, const std::string& reason) override { closed[conn] = {code, reason}; }
  void ArmTimer(ConnId conn, absl::Duration after) override { timers[conn] = after; }
  void NotifyWhenWritten(ConnId conn) override { notify_written.insert(conn); }

  std::map<ConnId, std::vector<std::string>> sent;
  std::map<ConnId, Closed> closed;
  std::map<ConnId, absl::Duration> timers;
  std::set<ConnId> notify_written;
  std::set<ConnId> full;
};

class RecordingObserver : public SessionObserver {
 public:
  void OnSessionOpened(const v1::SessionRecord& r) override { opened.push_back(r); }
  void OnSessionClosed(const std::string& id) override { closed.push_back(id); }
  std::vector<v1::SessionRecord> opened;
  std::vector<std::string> closed;
};

constexpr const char* kSecret = kDemoSecret;
constexpr char kOtherSecret[] = "other-secret-456";

class HubTest : public ::testing::Test {
 protected:
  HubTest() {
    config_ = DemoGatewayConfig(/*max_sessions=*/100, /*max_unsigned=*/100);
    auto* app = config_.add_apps();
    app->set_id("other");
    app->set_key("other-key");
    app->set_secret(kOtherSecret);
    hub_ = std::make_unique<Hub>(config_, "gw-test", &transport_, &observer_, [this] { return now_; });
  }

  std::string Token(const std::string& sub, const std::string& extra = "", const std::string& secret = kSecret) {
    return MakeToken(absl::StrCat(R"({"sub":")", sub, "\"", extra, "}"), secret);
  }

  void Open(ConnId id, const std::string& app = "", Wire wire = Wire::kCentrifugeJson) {
    ConnectionMeta meta;
    meta.remote_addr = "10.0.0.1";
    meta.app_id = app;
    meta.wire = wire;
    hub_->OnOpen(id, meta);
  }

  // Opens and connects; returns the client ID from the reply.
  std::string Connect(ConnId id, const std::string& user, const std::string& extra = "") {
    Open(id);
    hub_->OnFrame(id, absl::StrCat(R"({"id":1,"connect":{"token":")", Token(user, extra),
                                   R"(","name":"web","version":"2.0"}})"),
                  false);
    EXPECT_EQ(transport_.closed.count(id), 0u);
    EXPECT_FALSE(transport_.sent[id].empty());
    if (observer_.opened.empty()) return "";
    return observer_.opened.back().client_id();
  }

  v1::BusReply Bus(const v1::BusRequest& req) {
    v1::BusRequest r = req;
    r.set_format_version(1);
    r.set_request_id("req-1");
    return hub_->HandleBusRequest(r);
  }

  int CloseCode(ConnId id) { return transport_.closed.count(id) ? transport_.closed[id].code : 0; }

  v1::Config config_;
  FakeTransport transport_;
  RecordingObserver observer_;
  absl::Time now_ = absl::FromUnixSeconds(1'800'000'000);
  std::unique_ptr<Hub> hub_;
};

TEST_F(HubTest, ConnectRepliesWithClientIdAndRecordsSession) {
  std::string client = Connect(1, "42", R"(,"info":{"n":1},"meta":{"secret":"M3TA"})");
  ASSERT_FALSE(client.empty());
  const std::string& reply = transport_.sent[1].back();
  EXPECT_NE(reply.find(client), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"ping\":25"), std::string::npos) << reply;
  EXPECT_EQ(reply.find("M3TA"), std::string::npos) << "meta must stay server-side: " << reply;
  const auto& rec = observer_.opened.back();
  EXPECT_EQ(rec.app_id(), "demo");
  EXPECT_EQ(rec.user_id(), "42");
  EXPECT_EQ(rec.app_name(), "web");
  EXPECT_EQ(rec.app_version(), "2.0");
  EXPECT_EQ(rec.transport(), "websocket");
  EXPECT_EQ(rec.protocol(), "json");
  EXPECT_EQ(rec.remote_addr(), "10.0.0.1");
  EXPECT_EQ(rec.gateway_id(), "gw-test");
  EXPECT_EQ(rec.connected_at_ms(), 1'800'000'000'000);
  EXPECT_NE(rec.meta_json().find("M3TA"), std::string::npos);
  EXPECT_EQ(hub_->session_count(), 1u);
}

TEST_F(HubTest, ClientIdsAreUnique) {
  std::string a = Connect(1, "42");
  std::string b = Connect(2, "42");
  EXPECT_NE(a, b);
}

TEST_F(HubTest, BadTokenClosesWithInvalidToken) {
  Open(1);
  hub_->OnFrame(1, absl::StrCat(R"({"id":1,"connect":{"token":")", Token("42", "", "wrong-secret-999"), "\"}}"),
                false);
  EXPECT_EQ(CloseCode(1), close_code::kInvalidToken);
  EXPECT_EQ(transport_.closed[1].reason, "invalid token");
  EXPECT_EQ(hub_->session_count(), 0u);
  EXPECT_TRUE(observer_.opened.empty());
}

TEST_F(HubTest, SessionDataOverTheCapIsRefusedAtConnect) {
  // 8 KiB by default: a token whose meta is larger never becomes a session
  // (it would ride in every answer and every snapshot about it).
  Open(1);
  hub_->OnFrame(1,
                absl::StrCat(R"({"id":1,"connect":{"token":")",
                             Token("42", absl::StrCat(R"(,"meta":{"blob":")", std::string(9000, 'x'), "\"}")), "\"}}"),
                false);
  EXPECT_EQ(CloseCode(1), close_code::kBadRequest);
  EXPECT_EQ(transport_.closed[1].reason, "session data too large");
  EXPECT_EQ(hub_->session_count(), 0u);
  // Just under it: a session.
  EXPECT_FALSE(Connect(2, "42", absl::StrCat(R"(,"meta":{"blob":")", std::string(8000, 'x'), "\"}")).empty());
}

TEST_F(HubTest, TokenOfAnotherAppIsInvalid) {
  Open(1, "demo");
  hub_->OnFrame(1, absl::StrCat(R"({"id":1,"connect":{"token":")", Token("42", "", kOtherSecret), "\"}}"), false);
  EXPECT_EQ(CloseCode(1), close_code::kInvalidToken);
  Open(2, "other");
  hub_->OnFrame(2, absl::StrCat(R"({"id":1,"connect":{"token":")", Token("42", "", kOtherSecret), "\"}}"), false);
  EXPECT_EQ(CloseCode(2), 0);
  EXPECT_EQ(observer_.opened.back().app_id(), "other");
}

TEST_F(HubTest, UnknownAppIsBadRequest) {
  Open(1, "nope");
  hub_->OnFrame(1, absl::StrCat(R"({"id":1,"connect":{"token":")", Token("42"), "\"}}"), false);
  EXPECT_EQ(CloseCode(1), close_code::kBadRequest);
}

TEST_F(HubTest, ExpiredTokenAtConnectIsError109NotAClose) {
  Open(1);
  hub_->OnFrame(1, absl::StrCat(R"({"id":1,"connect":{"token":")", Token("42", R"(,"exp":1799999999)"), "\"}}"),
                false);
  EXPECT_EQ(CloseCode(1), 0);
  auto reply = nlohmann::json::parse(transport_.sent[1].back());
  EXPECT_EQ(reply["id"], 1);
  EXPECT_EQ(reply["error"]["code"], 109);
  EXPECT_EQ(reply["error"]["message"], "token expired");
  EXPECT_EQ(hub_->session_count(), 0u);
  // The SDK fetches a new token; a connect with it on the same socket works.
  hub_->OnFrame(1, absl::StrCat(R"({"id":2,"connect":{"token":")", Token("42", R"(,"exp":1800000100)"), "\"}}"),
                false);
  EXPECT_EQ(CloseCode(1), 0);
  EXPECT_EQ(hub_->session_count(), 1u);
}

TEST_F(HubTest, ExpiredTokenAtConnectIsError109InProtobufToo) {
  Open(1, "", Wire::kCentrifugeProtobuf);
  v1::ClientCommand cmd;
  cmd.set_id(1);
  cmd.mutable_connect()->set_token(Token("42", R"(,"exp":1799999999)"));
  std::string frame;
  frame.push_back(static_cast<char>(cmd.ByteSizeLong()));
  frame += cmd.SerializeAsString();
  hub_->OnFrame(1, frame, true);
  EXPECT_EQ(CloseCode(1), 0);
  const std::string& out = transport_.sent[1].back();
  v1::ClientReply reply;
  ASSERT_TRUE(reply.ParseFromString(out.substr(1)));
  EXPECT_EQ(reply.error().code(), 109u);
}

TEST_F(HubTest, ExpiredTokenOnUniStreamEndsWithExpiredDisconnect) {
  ConnectionMeta meta;
  meta.wire = Wire::kUniHttpStream;
  meta.connect_body = absl::StrCat(R"({"token":")", Token("42", R"(,"exp":1799999999)"), "\"}");
  hub_->OnOpen(1, meta);
  EXPECT_EQ(CloseCode(1), close_code::kExpired);
  EXPECT_NE(transport_.sent[1].back().find("3005"), std::string::npos) << transport_.sent[1].back();
}

TEST_F(HubTest, OtherTokenFailuresAreInvalidToken) {
  config_.mutable_apps(0)->set_audience("chat");
  config_.mutable_apps(0)->set_issuer("auth");
  const char* bad[] = {R"(,"aud":"chat")", R"(,"iss":"auth")", R"(,"aud":"x","iss":"auth")",
                       R"(,"aud":"chat","iss":"auth","nbf":1800000100)"};
  ConnId id = 1;
  for (const char* extra : bad) {
    Open(id);
    hub_->OnFrame(id, absl::StrCat(R"({"id":1,"connect":{"token":")", Token("42", extra), "\"}}"), false);
    EXPECT_EQ(CloseCode(id), close_code::kInvalidToken) << extra;
    ++id;
  }
  Connect(id, "42", R"(,"aud":["chat"],"iss":"auth")");
  EXPECT_EQ(CloseCode(id), 0);
}

TEST_F(HubTest, TtlNeverOverstatesTheTimeLeft) {
  now_ += absl::Milliseconds(700);  // exp - now = 59.3 s
  Connect(1, "42", R"(,"exp":1800000060)");
  auto reply = nlohmann::json::parse(transport_.sent[1].back());
  EXPECT_EQ(reply["connect"]["expires"], true);
  EXPECT_EQ(reply["connect"]["ttl"], 59);
}

TEST_F(HubTest, ExpiredSessionClosesOnlyAfterTheGrace) {
  config_.mutable_gateway()->set_client_expired_close_delay_s(25);
  config_.mutable_gateway()->set_ping_interval_s(3600);  // no pong deadline in the way
  Connect(1, "42", R"(,"exp":1800000060)");
  now_ += absl::Seconds(61);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 0) << "closed at exp, before the grace";
  now_ += absl::Seconds(23);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 0);
  now_ += absl::Seconds(1);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), close_code::kExpired);
  EXPECT_EQ(transport_.closed[1].reason, "connection expired");
  EXPECT_EQ(observer_.closed.size(), 1u);
}

TEST_F(HubTest, RefreshWithinTheGraceKeepsTheSession) {
  config_.mutable_gateway()->set_client_expired_close_delay_s(25);
  config_.mutable_gateway()->set_ping_interval_s(3600);
  std::string client = Connect(1, "42", R"(,"exp":1800000010)");
  now_ += absl::Seconds(20);  // expired 10 s ago, inside the grace
  hub_->OnFrame(1, absl::StrCat(R"({"id":2,"refresh":{"token":")", Token("42", R"(,"exp":1800000050)"), "\"}}"),
                false);
  ASSERT_EQ(CloseCode(1), 0);
  auto reply = nlohmann::json::parse(transport_.sent[1].back());
  EXPECT_EQ(reply["id"], 2);
  EXPECT_EQ(reply["refresh"]["client"], client);
  EXPECT_EQ(reply["refresh"]["expires"], true);
  EXPECT_EQ(reply["refresh"]["ttl"], 30);
  EXPECT_EQ(hub_->stats().refreshes, 1u);
  now_ += absl::Seconds(40);  // past the old exp + grace, before the new exp + grace
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 0);
  now_ += absl::Seconds(20);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), close_code::kExpired);
}

TEST_F(HubTest, RefreshForAnotherUserOrWithABadTokenIsInvalidToken) {
  Connect(1, "42", R"(,"exp":1800000010)");
  hub_->OnFrame(1, absl::StrCat(R"({"id":2,"refresh":{"token":")", Token("43", R"(,"exp":1800000050)"), "\"}}"),
                false);
  EXPECT_EQ(CloseCode(1), close_code::kInvalidToken);
  Connect(2, "42", R"(,"exp":1800000010)");
  hub_->OnFrame(2, absl::StrCat(R"({"id":2,"refresh":{"token":")", Token("42", "", "wrong-secret-999"), "\"}}"),
                false);
  EXPECT_EQ(CloseCode(2), close_code::kInvalidToken);
  Connect(3, "42", R"(,"exp":1800000010)");
  hub_->OnFrame(3, absl::StrCat(R"({"id":2,"refresh":{"token":")", Token("42", R"(,"exp":1799999990)"), "\"}}"),
                false);
  EXPECT_EQ(CloseCode(3), close_code::kExpired);
  Connect(4, "42");
  hub_->OnFrame(4, R"({"id":2,"refresh":{"token":""}})", false);
  EXPECT_EQ(CloseCode(4), close_code::kBadRequest);
  EXPECT_EQ(hub_->session_count(), 0u);
}

TEST_F(HubTest, RefreshWithoutExpStopsExpiry) {
  Connect(1, "42", R"(,"exp":1800000010)");
  hub_->OnFrame(1, absl::StrCat(R"({"id":2,"refresh":{"token":")", Token("42"), "\"}}"), false);
  auto reply = nlohmann::json::parse(transport_.sent[1].back());
  EXPECT_FALSE(reply["refresh"].contains("expires"));
  now_ += absl::Hours(2);
  hub_->OnTimer(1);
  EXPECT_NE(CloseCode(1), close_code::kExpired);
}

TEST_F(HubTest, ALateLoopNeverKillsAClientWhosePongIsWaiting) {
  Connect(1, "42");
  now_ += absl::Seconds(25);
  hub_->OnTimer(1);  // ping; pong due 8 s later
  // The loop stalls for 20 s: the timer fires 12 s after the pong deadline,
  // and the client's pong is still unread behind it.
  now_ += absl::Seconds(20);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 0) << "killed for the loop's lateness";
  EXPECT_EQ(hub_->stats().late_pong_checks, 1u);
  hub_->OnFrame(1, "{}", false);  // the pong, read now
  now_ += absl::Seconds(1);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 0);
}

TEST_F(HubTest, PongDeadlineCountsFromWhenThePingWasWritten) {
  Connect(1, "42");
  now_ += absl::Seconds(25);
  hub_->OnTimer(1);  // ping queued; provisional deadline 8 s from now
  ASSERT_EQ(transport_.notify_written.count(1), 1u);
  // The socket only takes the ping 6 s later (a slow loop or a full socket):
  // the client has 8 s from then, not 2.
  now_ += absl::Seconds(6);
  hub_->OnWritten(1);
  EXPECT_EQ(transport_.timers[1], absl::Seconds(8));
  now_ += absl::Seconds(7);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 0) << "closed before 8 s had passed since the ping was written";
  hub_->OnFrame(1, "{}", false);  // the pong
  now_ += absl::Seconds(5);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 0);
  // Written at once: the deadline stays 8 s after the ping, and a silent
  // client is closed then.
  Connect(2, "43");
  now_ += absl::Seconds(25);
  hub_->OnTimer(2);
  hub_->OnWritten(2);
  now_ += absl::Seconds(8);
  hub_->OnTimer(2);
  EXPECT_EQ(CloseCode(2), close_code::kNoPong);
}

TEST_F(HubTest, OnTimeLoopStillClosesSilentClients) {
  Connect(1, "42");
  now_ += absl::Seconds(25);
  hub_->OnTimer(1);
  now_ += absl::Seconds(8);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), close_code::kNoPong);
  // And a late loop only postpones it once the pong truly is not there.
  Connect(2, "43");
  now_ += absl::Seconds(25);
  hub_->OnTimer(2);
  now_ += absl::Seconds(20);
  hub_->OnTimer(2);
  EXPECT_EQ(CloseCode(2), 0);
  now_ += absl::Milliseconds(500);
  hub_->OnTimer(2);
  EXPECT_EQ(CloseCode(2), close_code::kNoPong);
}

TEST_F(HubTest, MalformedJsonClosesWithBadRequest) {
  Open(1);
  hub_->OnFrame(1, "{bad", false);
  EXPECT_EQ(CloseCode(1), close_code::kBadRequest);
  Connect(2, "42");
  hub_->OnFrame(2, "not json at all", false);
  EXPECT_EQ(CloseCode(2), close_code::kBadRequest);
  EXPECT_EQ(hub_->session_count(), 0u);
  EXPECT_EQ(hub_->stats().bad_frames, 2u);
}

TEST_F(HubTest, FirstCommandMustBeConnect) {
  Open(1);
  hub_->OnFrame(1, R"({"id":1,"ping":{}})", false);
  EXPECT_EQ(CloseCode(1), close_code::kBadRequest);
}

TEST_F(HubTest, SecondConnectIsBadRequest) {
  Connect(1, "42");
  hub_->OnFrame(1, absl::StrCat(R"({"id":2,"connect":{"token":")", Token("43"), "\"}}"), false);
  EXPECT_EQ(CloseCode(1), close_code::kBadRequest);
}

TEST_F(HubTest, NoConnectBeforeDeadlineIsStale) {
  Open(1);
  ASSERT_EQ(transport_.timers[1], absl::Seconds(10));
  now_ += absl::Seconds(5);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 0);
  now_ += absl::Seconds(5);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), close_code::kStale);
}

TEST(FirstPing, SpreadOverTheSecondHalfOfTheIntervalForConsecutiveConnections) {
  // A burst of connections (consecutive IDs) gets first pings spread evenly,
  // never later than the interval the client was told.
  const absl::Duration interval = absl::Seconds(25);
  int buckets[10] = {};
  for (ConnId id = 1; id <= 10000; ++id) {
    const absl::Duration d = FirstPingAfter(id, interval);
    ASSERT_GE(d, interval / 2);
    ASSERT_LT(d, interval);
    ++buckets[std::min(9, static_cast<int>((d - interval / 2) / (interval / 20)))];
  }
  for (int b : buckets) EXPECT_GT(b, 700) << "uneven spread";
}

TEST(FirstPing, SlotsAreWholeQuarterSecondsAtMostAQuarterSecondLater) {
  for (int64_t ms : std::vector<int64_t>{0, 1, 249, 250, 251, 999, 1'800'000'000'123}) {
    const absl::Time t = absl::FromUnixMillis(ms);
    const absl::Time slot = PingSlot(t);
    EXPECT_GE(slot, t);
    EXPECT_LT(slot - t, absl::Milliseconds(250));
    EXPECT_EQ(absl::ToUnixMillis(slot) % 250, 0) << ms;
    const absl::Time shifted = PingSlot(t, absl::Milliseconds(100));
    EXPECT_GE(shifted, t);
    EXPECT_LT(shifted - t, absl::Milliseconds(250));
    EXPECT_EQ(absl::ToUnixMillis(shifted) % 250, 100) << ms;
  }
}

TEST_F(HubTest, PingsAndClosesWhenNoPong) {
  Connect(1, "42");
  size_t before = transport_.sent[1].size();
  now_ += absl::Seconds(25);
  hub_->OnTimer(1);
  ASSERT_EQ(transport_.sent[1].size(), before + 1);
  EXPECT_EQ(transport_.sent[1].back(), "{}");
  now_ += absl::Seconds(8);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), close_code::kNoPong);
}

TEST_F(HubTest, PongKeepsTheSessionAlive) {
  Connect(1, "42");
  for (int i = 0; i < 5; ++i) {
    now_ += absl::Seconds(25);
    hub_->OnTimer(1);
    now_ += absl::Seconds(1);
    hub_->OnFrame(1, "{}", false);
  }
  now_ += absl::Seconds(7);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 0);
}

TEST_F(HubTest, UnsupportedCommandsGetAnErrorReplyNotAClose) {
  Connect(1, "42");
  hub_->OnFrame(1, R"({"id":5,"subscribe":{"channel":"news"}})", false);
  EXPECT_EQ(CloseCode(1), 0);
  EXPECT_NE(transport_.sent[1].back().find("\"code\":108"), std::string::npos) << transport_.sent[1].back();
  hub_->OnFrame(1, R"({"id":6,"ping":{}})", false);
  EXPECT_NE(transport_.sent[1].back().find("\"id\":6"), std::string::npos);
}

TEST_F(HubTest, OversizedFrameCloses1009) {
  Connect(1, "42");
  hub_->OnOversizedFrame(1);
  EXPECT_EQ(CloseCode(1), close_code::kMessageTooBig);
}

TEST_F(HubTest, FullGatewayRefusesNewSessions) {
  config_.mutable_gateway()->set_max_sessions(2);
  Connect(1, "a");
  Connect(2, "b");
  Open(3);
  hub_->OnFrame(3, absl::StrCat(R"({"id":1,"connect":{"token":")", Token("c"), "\"}}"), false);
  EXPECT_EQ(CloseCode(3), close_code::kTryAgainLater);
  EXPECT_EQ(hub_->session_count(), 2u);
}

TEST_F(HubTest, UserQueryAnswersOnlyThatUsersSessionsWithMeta) {
  std::string a = Connect(1, "42", R"(,"meta":{"device":"phone"})");
  std::string b = Connect(2, "42");
  Connect(3, "43");
  v1::BusRequest req;
  req.mutable_user_query()->set_app_id("demo");
  req.mutable_user_query()->set_user_id("42");
  v1::BusReply reply = Bus(req);
  EXPECT_EQ(reply.gateway_id(), "gw-test");
  EXPECT_EQ(reply.request_id(), "req-1");
  ASSERT_EQ(reply.sessions_size(), 2);
  std::set<std::string> ids;
  for (const auto& s : reply.sessions()) ids.insert(s.client_id());
  EXPECT_EQ(ids, (std::set<std::string>{a, b}));
  req.mutable_user_query()->set_app_id("other");
  EXPECT_EQ(Bus(req).sessions_size(), 0);
}

TEST_F(HubTest, AUserQueryPageIsTheFirstSessionsAfterTheCursorInClientIdOrder) {
  std::vector<std::string> ids;
  for (ConnId c = 1; c <= 7; ++c) ids.push_back(Connect(c, "42"));
  std::sort(ids.begin(), ids.end());
  v1::BusRequest req;
  req.mutable_user_query()->set_app_id("demo");
  req.mutable_user_query()->set_user_id("42");
  req.mutable_user_query()->set_limit(3);
  v1::BusReply reply = Bus(req);
  ASSERT_EQ(reply.sessions_size(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(reply.sessions(i).client_id(), ids[static_cast<size_t>(i)]);
  req.mutable_user_query()->set_after_client_id(ids[2]);
  reply = Bus(req);
  ASSERT_EQ(reply.sessions_size(), 3);
  EXPECT_EQ(reply.sessions(0).client_id(), ids[3]);
  req.mutable_user_query()->set_after_client_id(ids[5]);
  reply = Bus(req);
  ASSERT_EQ(reply.sessions_size(), 1);
  EXPECT_EQ(reply.sessions(0).client_id(), ids[6]);
}

TEST_F(HubTest, TerminateClosesAllButKeptAndLeavesOthers) {
  std::string a = Connect(1, "42");
  std::string b = Connect(2, "42");
  std::string c = Connect(3, "42");
  Connect(4, "43");
  v1::BusRequest req;
  auto* t = req.mutable_terminate();
  t->set_app_id("demo");
  t->set_user_id("42");
  t->add_except_client_ids(b);
  v1::BusReply reply = Bus(req);
  EXPECT_EQ(reply.closed(), 2u);
  EXPECT_EQ(CloseCode(1), close_code::kForceDisconnect);
  EXPECT_EQ(transport_.closed[1].reason, "force disconnect");
  EXPECT_EQ(CloseCode(2), 0);
  EXPECT_EQ(CloseCode(3), close_code::kForceDisconnect);
  EXPECT_EQ(CloseCode(4), 0);
  EXPECT_EQ(std::set<std::string>(observer_.closed.begin(), observer_.closed.end()), (std::set<std::string>{a, c}));
  // The socket layer reports the close later; counts stay right.
  hub_->OnClosed(1);
  hub_->OnClosed(3);
  EXPECT_EQ(hub_->session_count(), 2u);
  EXPECT_EQ(observer_.closed.size(), 2u);
  // A long keep-list (a set, not a scan) keeps the same way.
  const std::string d = Connect(5, "42");
  req.mutable_terminate()->clear_except_client_ids();
  for (int i = 0; i < 20; ++i) req.mutable_terminate()->add_except_client_ids("kept-" + std::to_string(i));
  req.mutable_terminate()->add_except_client_ids(b);
  EXPECT_EQ(Bus(req).closed(), 1u);
  EXPECT_EQ(CloseCode(5), close_code::kForceDisconnect);
  EXPECT_EQ(CloseCode(2), 0);
  hub_->OnClosed(5);
  EXPECT_EQ(Bus(req).closed(), 0u);
}

TEST_F(HubTest, TerminateUsesRequestedCodeAndReason) {
  Connect(1, "42");
  v1::BusRequest req;
  req.mutable_terminate()->set_app_id("demo");
  req.mutable_terminate()->set_user_id("42");
  req.mutable_terminate()->set_code(4501);
  req.mutable_terminate()->set_reason("suspended");
  EXPECT_EQ(Bus(req).closed(), 1u);
  EXPECT_EQ(CloseCode(1), 4501);
  EXPECT_EQ(transport_.closed[1].reason, "suspended");
}

TEST_F(HubTest, CloseCodesOutsideTheApplicationRangeAreRefusedFromTheBus) {
  Connect(1, "42");
  for (uint32_t code : {1u, 1000u, 1005u, 1006u, 2999u, 5000u, 65535u}) {
    v1::BusRequest req;
    req.mutable_terminate()->set_app_id("demo");
    req.mutable_terminate()->set_user_id("42");
    req.mutable_terminate()->set_code(code);
    auto reply = Bus(req);
    EXPECT_FALSE(reply.error().empty()) << code;
    EXPECT_EQ(reply.closed(), 0u) << code;
    v1::BusRequest d;
    d.mutable_disconnect()->set_app_id("demo");
    d.mutable_disconnect()->set_client_id(observer_.opened.back().client_id());
    d.mutable_disconnect()->set_code(code);
    EXPECT_FALSE(Bus(d).error().empty()) << code;
  }
  EXPECT_EQ(CloseCode(1), 0);
  EXPECT_EQ(hub_->session_count(), 1u);
}

TEST_F(HubTest, TerminateCanTargetOneConnectionOfTheUser) {
  std::string a = Connect(1, "42");
  std::string b = Connect(2, "42");
  std::string c = Connect(3, "43");
  v1::BusRequest req;
  req.mutable_terminate()->set_app_id("demo");
  req.mutable_terminate()->set_user_id("42");
  req.mutable_terminate()->set_only_client_id(c);  // not this user's: untouched
  EXPECT_EQ(Bus(req).closed(), 0u);
  req.mutable_terminate()->set_only_client_id(b);
  EXPECT_EQ(Bus(req).closed(), 1u);
  EXPECT_EQ(CloseCode(1), 0);
  EXPECT_EQ(CloseCode(2), close_code::kForceDisconnect);
  EXPECT_EQ(CloseCode(3), 0);
}

TEST_F(HubTest, DisconnectClosesOneConnectionOfTheRightApp) {
  std::string a = Connect(1, "42");
  Connect(2, "42");
  v1::BusRequest req;
  req.mutable_disconnect()->set_app_id("other");
  req.mutable_disconnect()->set_client_id(a);
  EXPECT_EQ(Bus(req).closed(), 0u);
  EXPECT_EQ(CloseCode(1), 0);
  req.mutable_disconnect()->set_app_id("demo");
  EXPECT_EQ(Bus(req).closed(), 1u);
  EXPECT_EQ(CloseCode(1), close_code::kForceDisconnect);
  EXPECT_EQ(CloseCode(2), 0);
}

// A command no session of this gateway is concerned by is answered from the
// index on the bus thread (AnswerIfNothingToDo), and never differently from
// how the loop would answer it: over every shape of command (user, one
// client, keep-lists, other apps, bad codes), whenever the fast answer is
// given, the loop's is the same (nothing done, nothing counted) and no
// session is touched; and commands with work to do are left to the loop.
TEST_F(HubTest, TheBusThreadAnswersOnlyCommandsWithNothingToDoAndAsTheLoopWould) {
  const std::string a = Connect(1, "42");
  const std::string b = Connect(2, "42");
  const std::string c = Connect(3, "43");
  std::vector<v1::BusRequest> requests;
  for (const std::string app : {"demo", "other", "nope"}) {
    for (const std::string user : {"42", "43", "44"}) {
      // Long keep-lists (more than 8) are looked up in a set, short ones scanned.
      std::vector<std::string> long_with_a{a}, long_without;
      for (int i = 0; i < 9; ++i) long_with_a.push_back("kept-" + std::to_string(i));
      for (int i = 0; i < 9; ++i) long_without.push_back("kept-" + std::to_string(i));
      long_with_a.push_back(b);
      for (const std::vector<std::string>& except :
           std::vector<std::vector<std::string>>{{}, {a}, {a, b}, {c}, long_with_a, long_without}) {
        for (const std::string& only : {std::string(), a, c, std::string("ghost")}) {
          for (uint32_t code : {0u, 4501u, 1000u}) {
            v1::BusRequest t;
            auto* tt = t.mutable_terminate();
            tt->set_app_id(app), tt->set_user_id(user), tt->set_only_client_id(only), tt->set_code(code);
            for (const auto& e : except) tt->add_except_client_ids(e);
            requests.push_back(t);
          }
          v1::BusRequest m;
          auto* mm = m.mutable_send();
          mm->set_app_id(app), mm->set_event("e"), mm->set_data_json("1");
          if (only.empty()) {
            mm->set_user_id(user);
          } else {
            mm->set_only_client_id(only);
          }
          for (const auto& e : except) mm->add_except_client_ids(e);
          requests.push_back(m);
        }
      }
      for (const std::string& client : {a, c, std::string("ghost"), std::string()}) {
        v1::BusRequest d;
        d.mutable_disconnect()->set_app_id(app), d.mutable_disconnect()->set_client_id(client);
        requests.push_back(d);
      }
    }
  }
  int fast = 0, loop = 0;
  for (auto req : requests) {
    req.set_format_version(1);
    req.set_request_id("r");
    auto quick = hub_->AnswerIfNothingToDo(req);
    if (!quick.has_value()) {
      ++loop;
      continue;
    }
    ++fast;
    EXPECT_EQ(quick->closed(), 0u);
    EXPECT_EQ(quick->delivered(), 0u);
    EXPECT_TRUE(quick->error().empty());
    EXPECT_EQ(quick->gateway_id(), "gw-test");
    const v1::BusReply slow = hub_->HandleBusRequest(req);
    EXPECT_EQ(slow.closed(), 0u) << req.ShortDebugString();
    EXPECT_EQ(slow.delivered(), 0u) << req.ShortDebugString();
    EXPECT_TRUE(slow.not_delivered().empty()) << req.ShortDebugString();
    EXPECT_TRUE(slow.error().empty()) << req.ShortDebugString();
  }
  EXPECT_EQ(hub_->session_count(), 3u);
  EXPECT_TRUE(transport_.closed.empty());
  EXPECT_GT(fast, 100);
  EXPECT_GT(loop, 50);
  // And those with work to do do it on the loop.
  v1::BusRequest send;
  send.set_format_version(1);
  send.mutable_send()->set_app_id("demo"), send.mutable_send()->set_user_id("42");
  send.mutable_send()->set_event("e"), send.mutable_send()->set_data_json("1");
  EXPECT_FALSE(hub_->AnswerIfNothingToDo(send).has_value());
  EXPECT_EQ(hub_->HandleBusRequest(send).delivered(), 2u);
}

TEST_F(HubTest, UnknownFormatVersionIsAnsweredWithError) {
  v1::BusRequest req;
  req.set_format_version(99);
  req.set_request_id("r");
  v1::BusReply reply = hub_->HandleBusRequest(req);
  EXPECT_FALSE(reply.error().empty());
  EXPECT_EQ(reply.gateway_id(), "gw-test");
}

TEST_F(HubTest, ClientGoingAwayDropsTheSession) {
  std::string a = Connect(1, "42");
  hub_->OnClosed(1);
  EXPECT_EQ(hub_->session_count(), 0u);
  EXPECT_EQ(hub_->connection_count(), 0u);
  EXPECT_EQ(observer_.closed, (std::vector<std::string>{a}));
  hub_->OnFrame(1, "{}", false);  // late frame for a gone connection: ignored
  hub_->OnTimer(1);
}

TEST_F(HubTest, CloseAllInSlicesForADrain) {
  for (ConnId id = 1; id <= 5; ++id) Connect(id, "42");
  EXPECT_EQ(hub_->CloseAll(close_code::kShutdown, "shutdown", 2), 2u);
  EXPECT_EQ(transport_.closed.size(), 2u);
  EXPECT_EQ(hub_->CloseAll(close_code::kShutdown, "shutdown", 2), 2u);
  EXPECT_EQ(hub_->CloseAll(close_code::kShutdown, "shutdown", 2), 1u);
  EXPECT_EQ(hub_->CloseAll(close_code::kShutdown, "shutdown", 2), 0u);
  EXPECT_EQ(transport_.closed.size(), 5u);
  EXPECT_EQ(hub_->session_count(), 0u);
}

TEST_F(HubTest, CloseAllClosesEveryConnection) {
  Connect(1, "42");
  Open(2);
  EXPECT_EQ(hub_->CloseAll(close_code::kShutdown, "shutdown"), 2u);
  EXPECT_EQ(CloseCode(1), close_code::kShutdown);
  EXPECT_EQ(CloseCode(2), close_code::kShutdown);
  EXPECT_EQ(hub_->session_count(), 0u);
}

// --- Pusher Channels protocol -------------------------------------------

class PusherHubTest : public HubTest {
 protected:
  // Opens a pusher connection and returns its socket_id.
  std::string OpenPusher(ConnId id, const std::string& key = "demo-key") {
    ConnectionMeta meta;
    meta.remote_addr = "10.0.0.2";
    meta.wire = Wire::kPusher;
    meta.pusher_key = key;
    meta.client_name = "js";
    meta.client_version = "8.6.0";
    hub_->OnOpen(id, meta);
    if (transport_.sent[id].empty()) return "";
    auto msg = nlohmann::json::parse(transport_.sent[id][0]);
    if (msg["event"] != "pusher:connection_established") return "";
    return nlohmann::json::parse(msg["data"].get<std::string>())["socket_id"];
  }

  static std::string Sign(const std::string& secret, const std::string& data) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
    return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(mac), len));
  }

  void Signin(ConnId id, const std::string& socket_id, const std::string& user_data,
              const std::string& secret = kSecret) {
    nlohmann::json data = {{"auth", "demo-key:" + Sign(secret, socket_id + "::user::" + user_data)},
                           {"user_data", user_data}};
    hub_->OnFrame(id, nlohmann::json({{"event", "pusher:signin"}, {"data", data}}).dump(), false);
  }

  std::string LastEvent(ConnId id) {
    return nlohmann::json::parse(transport_.sent[id].back())["event"].get<std::string>();
  }
};

TEST_F(PusherHubTest, EstablishesWithSocketIdAndActivityTimeout) {
  std::string sid = OpenPusher(1);
  EXPECT_TRUE(std::regex_match(sid, std::regex("[0-9]+\\.[0-9]+"))) << sid;
  auto data = nlohmann::json::parse(nlohmann::json::parse(transport_.sent[1][0])["data"].get<std::string>());
  EXPECT_EQ(data["activity_timeout"], 25);
  EXPECT_EQ(hub_->session_count(), 0u);  // not a session until signed in
}

TEST_F(PusherHubTest, SigninMakesASessionWithUserInfoAsMeta) {
  std::string sid = OpenPusher(1);
  Signin(1, sid, R"({"id":"42","user_info":{"plan":"gold"}})");
  EXPECT_EQ(LastEvent(1), "pusher:signin_success");
  ASSERT_EQ(observer_.opened.size(), 1u);
  const auto& rec = observer_.opened[0];
  EXPECT_EQ(rec.client_id(), sid);
  EXPECT_EQ(rec.user_id(), "42");
  EXPECT_EQ(rec.protocol(), "pusher");
  EXPECT_EQ(rec.app_name(), "js");
  EXPECT_EQ(rec.app_version(), "8.6.0");
  EXPECT_EQ(nlohmann::json::parse(rec.meta_json()), nlohmann::json::parse(R"({"plan":"gold"})"));
}

TEST_F(PusherHubTest, UserInfoOverTheCapIsAnErrorAndStaysUnsigned) {
  std::string sid = OpenPusher(1);
  Signin(1, sid, absl::StrCat(R"({"id":"42","user_info":{"blob":")", std::string(5 << 20, 'x'), "\"}}"));
  EXPECT_EQ(LastEvent(1), "pusher:error");
  EXPECT_EQ(hub_->session_count(), 0u);
  EXPECT_EQ(CloseCode(1), 0);
  // The same socket may still sign in with a reasonable one.
  Signin(1, sid, R"({"id":"42","user_info":{"plan":"gold"}})");
  EXPECT_EQ(LastEvent(1), "pusher:signin_success");
}

TEST_F(PusherHubTest, BadSignatureStaysUnsigned) {
  std::string sid = OpenPusher(1);
  Signin(1, sid, R"({"id":"42"})", "wrong-secret");
  EXPECT_EQ(LastEvent(1), "pusher:error");
  EXPECT_EQ(hub_->session_count(), 0u);
  EXPECT_EQ(CloseCode(1), 0);
  // A signature for another socket does not carry over.
  std::string other = OpenPusher(2);
  Signin(1, other, R"({"id":"42"})");
  EXPECT_EQ(hub_->session_count(), 0u);
  Signin(1, sid, R"({"no_id":true})");
  EXPECT_EQ(hub_->session_count(), 0u);
}

TEST_F(PusherHubTest, InvalidUtf8FromTheUrlNeverReachesTheRecord) {
  ConnectionMeta meta;
  meta.wire = Wire::kPusher;
  meta.pusher_key = "demo-key";
  meta.client_name = "js\xff\xfe";
  meta.client_version = "\xc0\xaf" "1";  // overlong '/'
  hub_->OnOpen(1, meta);
  auto est = nlohmann::json::parse(transport_.sent[1][0]);
  std::string sid = nlohmann::json::parse(est["data"].get<std::string>())["socket_id"];
  Signin(1, sid, R"({"id":"42"})");
  ASSERT_EQ(observer_.opened.size(), 1u);
  v1::SessionRecord rec = observer_.opened[0];
  EXPECT_EQ(rec.app_name(), "js\xEF\xBF\xBD\xEF\xBF\xBD");
  // It round-trips through protobuf (strings must be UTF-8 to parse).
  v1::SessionRecord back;
  EXPECT_TRUE(back.ParseFromString(rec.SerializeAsString()));
  // An unknown key with invalid UTF-8 is echoed safely.
  meta.pusher_key = "\xff\xfe";
  hub_->OnOpen(2, meta);
  EXPECT_EQ(CloseCode(2), 4001);
}

TEST_F(PusherHubTest, UnsupportedProtocolVersionCloses4007) {
  ConnectionMeta meta;
  meta.wire = Wire::kPusher;
  meta.pusher_key = "demo-key";
  meta.pusher_protocol = "3";
  hub_->OnOpen(1, meta);
  EXPECT_EQ(LastEvent(1), "pusher:error");
  EXPECT_EQ(CloseCode(1), 4007);
}

TEST_F(PusherHubTest, UnknownKeyCloses4001) {
  OpenPusher(1, "nope");
  EXPECT_EQ(LastEvent(1), "pusher:error");
  EXPECT_EQ(CloseCode(1), 4001);
}

TEST_F(PusherHubTest, TerminateSendsErrorThen4009AndReconnectStyleIs4200) {
  std::string a = OpenPusher(1);
  Signin(1, a, R"({"id":"42"})");
  std::string b = OpenPusher(2);
  Signin(2, b, R"({"id":"42"})");
  v1::BusRequest req;
  req.mutable_terminate()->set_app_id("demo");
  req.mutable_terminate()->set_user_id("42");
  req.mutable_terminate()->add_except_client_ids(b);
  EXPECT_EQ(Bus(req).closed(), 1u);
  EXPECT_EQ(LastEvent(1), "pusher:error");
  EXPECT_EQ(nlohmann::json::parse(transport_.sent[1].back())["data"]["code"], 4009);
  EXPECT_EQ(CloseCode(1), 4009);
  req.mutable_terminate()->clear_except_client_ids();
  req.mutable_terminate()->set_code(3001);
  EXPECT_EQ(Bus(req).closed(), 1u);
  EXPECT_EQ(CloseCode(2), 4200);
}

TEST_F(PusherHubTest, SilenceGetsAPingThenClose4201) {
  Signin(1, OpenPusher(1), R"({"id":"7"})");
  now_ += absl::Seconds(25);
  hub_->OnTimer(1);
  EXPECT_EQ(LastEvent(1), "pusher:ping");
  now_ += absl::Seconds(8);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 4201);
}

TEST_F(PusherHubTest, UnsignedConnectionIsClosedAfterTheSigninTimeout) {
  OpenPusher(1);
  hub_->OnFrame(1, R"({"event":"pusher:ping","data":{}})", false);  // traffic is not a sign-in
  now_ += absl::Seconds(29);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 0);
  now_ += absl::Seconds(1);
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 4009);
  EXPECT_EQ(nlohmann::json::parse(transport_.sent[1].back())["data"]["code"], 4009);
  // Signed in in time: no deadline any more.
  Signin(2, OpenPusher(2), R"({"id":"8"})");
  now_ += absl::Seconds(31);
  hub_->OnTimer(2);
  EXPECT_NE(CloseCode(2), 4009);
}

TEST_F(PusherHubTest, OnlySoManyMayWaitToSignIn) {
  config_.mutable_gateway()->set_max_unsigned(2);
  OpenPusher(1);
  OpenPusher(2);
  OpenPusher(3);
  EXPECT_EQ(CloseCode(3), 4100);
  // A sign-in frees a waiting slot; so does a close.
  Signin(1, nlohmann::json::parse(nlohmann::json::parse(transport_.sent[1][0])["data"].get<std::string>())["socket_id"],
         R"({"id":"1"})");
  OpenPusher(4);
  EXPECT_EQ(CloseCode(4), 0);
  hub_->OnClosed(2);
  OpenPusher(5);
  EXPECT_EQ(CloseCode(5), 0);
  OpenPusher(6);
  EXPECT_EQ(CloseCode(6), 4100);
}

TEST_F(PusherHubTest, PingIsAnsweredAndUnsupportedEventsAreRefused) {
  OpenPusher(1);
  hub_->OnFrame(1, R"({"event":"pusher:ping","data":{}})", false);
  EXPECT_EQ(LastEvent(1), "pusher:pong");
  hub_->OnFrame(1, R"({"event":"pusher:subscribe","data":{"channel":"news"}})", false);
  EXPECT_EQ(LastEvent(1), "pusher:subscription_error");
  hub_->OnFrame(1, R"({"event":"client-x","channel":"news","data":{}})", false);
  EXPECT_EQ(LastEvent(1), "pusher:error");
  hub_->OnFrame(1, "garbage", false);
  EXPECT_EQ(LastEvent(1), "pusher:error");
  hub_->OnFrame(1, "\x01\x02", true);
  EXPECT_EQ(LastEvent(1), "pusher:error");
  EXPECT_EQ(CloseCode(1), 0);
}

// --- Unidirectional HTTP stream ------------------------------------------

TEST_F(HubTest, UniStreamConnectsFromTheBodyAndEndsWithADisconnectLine) {
  ConnectionMeta meta;
  meta.wire = Wire::kUniHttpStream;
  meta.connect_body = absl::StrCat(R"({"token":")", Token("42"), R"(","name":"curl","version":"8"})");
  hub_->OnOpen(1, meta);
  ASSERT_EQ(transport_.sent[1].size(), 1u);
  auto first = nlohmann::json::parse(transport_.sent[1][0]);
  ASSERT_TRUE(first.contains("connect"));
  EXPECT_EQ(first["connect"]["ping"], 25);
  EXPECT_EQ(observer_.opened.back().transport(), "uni_http_stream");
  now_ += absl::Seconds(25);
  hub_->OnTimer(1);
  EXPECT_EQ(transport_.sent[1].back(), "{}\n");
  now_ += absl::Seconds(60);  // no pong is expected on a one-way stream
  hub_->OnTimer(1);
  EXPECT_EQ(CloseCode(1), 0);
  v1::BusRequest req;
  req.mutable_terminate()->set_app_id("demo");
  req.mutable_terminate()->set_user_id("42");
  EXPECT_EQ(Bus(req).closed(), 1u);
  auto last = nlohmann::json::parse(transport_.sent[1].back());
  EXPECT_EQ(last["disconnect"]["code"], 3503);
  EXPECT_EQ(CloseCode(1), 3503);
}

TEST_F(HubTest, UniStreamBadBodyEndsWith3501) {
  ConnectionMeta meta;
  meta.wire = Wire::kUniHttpStream;
  meta.connect_body = "{oops";
  hub_->OnOpen(1, meta);
  EXPECT_EQ(nlohmann::json::parse(transport_.sent[1].back())["disconnect"]["code"], 3501);
  EXPECT_EQ(CloseCode(1), close_code::kBadRequest);
}

TEST_F(HubTest, ProtobufConnectionRepliesInBinary) {
  Open(1, "", Wire::kCentrifugeProtobuf);
  hub_->OnFrame(1, R"({"id":1,"connect":{}})", false);  // text on a protobuf connection
  EXPECT_EQ(CloseCode(1), close_code::kBadRequest);
  Open(2, "", Wire::kCentrifugeProtobuf);
  v1::ClientCommand cmd;
  cmd.set_id(1);
  cmd.mutable_connect()->set_token(Token("42"));
  std::string body = cmd.SerializeAsString();
  ASSERT_LT(body.size(), 128u);
  hub_->OnFrame(2, std::string(1, static_cast<char>(body.size())) + body, true);
  ASSERT_EQ(CloseCode(2), 0);
  v1::ClientReply reply;
  ASSERT_TRUE(reply.ParseFromString(transport_.sent[2].back().substr(1)));
  EXPECT_FALSE(reply.connect().client().empty());
  EXPECT_EQ(observer_.opened.back().protocol(), "protobuf");
}

TEST_F(PusherHubTest, DeeplyNestedDataIsAnErrorNotAStackOverflow) {
  // One 256 KiB frame from a socket that never signed in used to overflow the
  // gateway's stack through nlohmann's recursive copy.
  config_.mutable_gateway()->set_max_message_bytes(256 * 1024);
  OpenPusher(1);
  const std::string deep(200000, '[');
  for (const std::string& frame :
       {R"({"event":"pusher:ping","data":)" + deep, R"({"event":"pusher:ping","data":")" + deep + "\"}",
        deep, R"({"event":"pusher:signin","data":{"auth":"x","user_data":")" + deep + "\"}}"}) {
    hub_->OnFrame(1, frame, false);
  }
  EXPECT_EQ(CloseCode(1), 0);
  EXPECT_GE(hub_->stats().bad_frames, 2u);
  // Still served afterwards.
  hub_->OnFrame(1, R"({"event":"pusher:ping","data":{}})", false);
  EXPECT_NE(transport_.sent[1].back().find("pusher:pong"), std::string::npos);
}

}  // namespace
// --- Messages to a user (SendToUser / SendToClient) ----------------------

v1::BusRequest SendRequest(const std::string& user, const std::string& data_json, std::vector<std::string> except = {}) {
  v1::BusRequest req;
  auto* m = req.mutable_send();
  m->set_app_id("demo");
  m->set_user_id(user);
  m->set_event("note");
  m->set_data_json(data_json);
  for (auto& e : except) m->add_except_client_ids(e);
  return req;
}

TEST_F(HubTest, ConnectReplySubscribesToThePersonalChannel) {
  Connect(1, "42");
  auto reply = nlohmann::json::parse(transport_.sent[1].back());
  EXPECT_EQ(reply["connect"]["subs"], nlohmann::json::parse(R"({"#42":{}})"));
}

TEST_F(HubTest, SendIsAPublicationOnThePersonalChannelForEachSessionButTheExcepted) {
  std::string a = Connect(1, "42");
  std::string b = Connect(2, "42");
  Connect(3, "43");
  v1::BusReply r = Bus(SendRequest("42", R"({"x":[1,"two"]})", {b}));
  EXPECT_EQ(r.error(), "");
  EXPECT_EQ(r.delivered(), 1u);
  EXPECT_TRUE(r.not_delivered().empty());
  EXPECT_EQ(nlohmann::json::parse(transport_.sent[1].back()),
            nlohmann::json::parse(R"({"push":{"channel":"#42","pub":{"data":{"x":[1,"two"]}}}})"));
  EXPECT_EQ(transport_.sent[2].size(), 1u);  // the connect reply only
  EXPECT_EQ(transport_.sent[3].size(), 1u);
  // One connection by its client ID; another app's client ID finds nothing.
  v1::BusRequest one;
  one.mutable_send()->set_app_id("demo");
  one.mutable_send()->set_only_client_id(b);
  one.mutable_send()->set_event("e");
  one.mutable_send()->set_data_json("7");
  EXPECT_EQ(Bus(one).delivered(), 1u);
  EXPECT_EQ(transport_.sent[2].back(), R"({"push":{"channel":"#42","pub":{"data":7}}})");
  one.mutable_send()->set_app_id("other");
  EXPECT_EQ(Bus(one).delivered(), 0u);
  (void)a;
}

TEST_F(HubTest, PersonalChannelNamespaceOfTheApp) {
  config_.mutable_apps(1)->set_personal_channel_namespace("personal");
  Open(1, "other");
  hub_->OnFrame(1, absl::StrCat(R"({"id":1,"connect":{"token":")", Token("42", "", kOtherSecret), R"("}})"), false);
  auto reply = nlohmann::json::parse(transport_.sent[1].back());
  EXPECT_EQ(reply["connect"]["subs"], nlohmann::json::parse(R"({"personal:#42":{}})"));
  v1::BusRequest req = SendRequest("42", "1");
  req.mutable_send()->set_app_id("other");
  ASSERT_EQ(Bus(req).delivered(), 1u);
  EXPECT_EQ(transport_.sent[1].back(), R"({"push":{"channel":"personal:#42","pub":{"data":1}}})");
}

TEST_F(HubTest, SendCountsAFullOutboxAsASlowConsumer) {
  Connect(1, "42");
  Connect(2, "42");
  transport_.full.insert(2);
  v1::BusReply r = Bus(SendRequest("42", "1"));
  EXPECT_EQ(r.delivered(), 1u);
  EXPECT_EQ(r.not_delivered().at("slow consumer"), 1u);
}

TEST_F(HubTest, SendInProtobufIsAPushWithThePayloadAsDataAndJsonSessionsGetTheirOwnFrame) {
  Open(1, "", Wire::kCentrifugeProtobuf);
  v1::ClientCommand cmd;
  cmd.set_id(1);
  cmd.mutable_connect()->set_token(Token("42"));
  std::string frame;
  {
    google::protobuf::io::StringOutputStream raw(&frame);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.WriteVarint32(static_cast<uint32_t>(cmd.ByteSizeLong()));
    cmd.SerializeWithCachedSizes(&coded);
  }
  hub_->OnFrame(1, frame, true);
  // Two JSON sessions of the same user beside it: a request makes each
  // wire's frame once, and each session gets its own wire's.
  Connect(2, "42");
  Connect(3, "42");
  ASSERT_EQ(Bus(SendRequest("42", R"({"a":1})")).delivered(), 3u);
  for (ConnId json_conn : {2, 3}) {
    EXPECT_EQ(transport_.sent[json_conn].back(), R"({"push":{"channel":"#42","pub":{"data":{"a":1}}}})");
  }
  const std::string& out = transport_.sent[1].back();
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(out.data()), static_cast<int>(out.size()));
  uint32_t len = 0;
  ASSERT_TRUE(in.ReadVarint32(&len));
  v1::ClientReply reply;
  ASSERT_TRUE(reply.ParseFromArray(out.data() + in.CurrentPosition(), static_cast<int>(len)));
  EXPECT_EQ(reply.push().channel(), "#42");
  EXPECT_EQ(reply.push().pub().data(), R"({"a":1})");
}

TEST_F(PusherHubTest, ServerToUserChannelIsTheSignedInUsersOwnOnly) {
  auto subscribe = [&](ConnId id, const std::string& channel) {
    hub_->OnFrame(id, nlohmann::json({{"event", "pusher:subscribe"}, {"data", {{"channel", channel}}}}).dump(), false);
    return nlohmann::json::parse(transport_.sent[id].back());
  };
  std::string sid = OpenPusher(1);
  auto m = subscribe(1, "#server-to-user-42");  // before signin
  EXPECT_EQ(m["event"], "pusher:subscription_error");
  EXPECT_EQ(m["data"]["status"], 401);
  // Not subscribed: a message is counted, not sent.
  Signin(1, sid, R"({"id":"42"})");
  v1::BusReply r = Bus(SendRequest("42", "1"));
  EXPECT_EQ(r.delivered(), 0u);
  EXPECT_EQ(r.not_delivered().at("not subscribed"), 1u);
  m = subscribe(1, "#server-to-user-43");
  EXPECT_EQ(m["event"], "pusher:subscription_error");
  EXPECT_EQ(m["data"]["status"], 403);
  m = subscribe(1, "private-x");
  EXPECT_EQ(m["data"]["status"], 501);
  m = subscribe(1, "#server-to-user-42");
  EXPECT_EQ(m["event"], "pusher_internal:subscription_succeeded");
  EXPECT_EQ(m["channel"], "#server-to-user-42");
  // Objects go as their JSON text, strings as they are (Pusher's data is a string).
  ASSERT_EQ(Bus(SendRequest("42", R"({"text":"hi"})")).delivered(), 1u);
  m = nlohmann::json::parse(transport_.sent[1].back());
  EXPECT_EQ(m["event"], "note");
  EXPECT_EQ(m["channel"], "#server-to-user-42");
  EXPECT_EQ(m["data"], R"({"text":"hi"})");
  ASSERT_EQ(Bus(SendRequest("42", R"("plain \"quoted\" text")")).delivered(), 1u);
  EXPECT_EQ(nlohmann::json::parse(transport_.sent[1].back())["data"], "plain \"quoted\" text");
  // Text from Pusher's own REST API goes as it came, a JSON string literal
  // with its quotes (pusher-js then parses it to the string, as Pusher's do).
  v1::BusRequest verbatim = SendRequest("42", R"("123")");
  verbatim.mutable_send()->set_pusher_text_verbatim(true);
  ASSERT_EQ(Bus(verbatim).delivered(), 1u);
  EXPECT_EQ(nlohmann::json::parse(transport_.sent[1].back())["data"], R"("123")");
  // Unsubscribed: no more.
  hub_->OnFrame(1, R"({"event":"pusher:unsubscribe","data":{"channel":"#server-to-user-42"}})", false);
  EXPECT_EQ(Bus(SendRequest("42", "1")).not_delivered().at("not subscribed"), 1u);
}

}  // namespace switchboard::gateway
