// Bad input never crashes the gateway: mutated and random frames for every
// wire, and random bus payloads, through the real hub and codecs (run under
// ASan/UBSan in the suite). Deterministic seeds, so a failure reproduces.
#include <random>

#include "absl/strings/str_cat.h"
#include "gateway/hub.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/tokens.h"

namespace switchboard::gateway {
namespace {

class NullTransport : public Transport {
 public:
  bool Send(ConnId, std::string frame, bool) override {
    bytes += frame.size();
    return true;
  }
  void Close(ConnId, int code, const std::string&) override { last_code = code; }
  void ArmTimer(ConnId, absl::Duration) override {}
  size_t bytes = 0;
  int last_code = 0;
};

class NullObserver : public SessionObserver {
 public:
  void OnSessionOpened(const v1::SessionRecord&) override { ++opened; }
  void OnSessionClosed(const std::string&) override { ++closed; }
  int opened = 0;
  int closed = 0;
};

std::string Mutate(std::string s, std::mt19937& rng) {
  std::uniform_int_distribution<int> op(0, 4), byte(0, 255);
  int n = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < n && !s.empty(); ++i) {
    size_t at = rng() % s.size();
    switch (op(rng)) {
      case 0: s[at] = static_cast<char>(byte(rng)); break;
      case 1: s.erase(at, 1 + rng() % 8); break;
      case 2: s.insert(at, 1, static_cast<char>(byte(rng))); break;
      case 3: s.resize(at); break;
      default: s.insert(at, s.substr(0, std::min<size_t>(s.size(), 16))); break;
    }
  }
  return s;
}

TEST(HubRobustness, MutatedFramesOnEveryWireNeverCrash) {
  v1::Config config;
  auto* app = config.add_apps();
  app->set_id("demo");
  app->set_key("demo-key");
  app->set_secret("demo-secret-123");
  config.set_default_app("demo");
  auto* gw = config.mutable_gateway();
  gw->set_ping_interval_s(25);
  gw->set_pong_timeout_s(8);
  gw->set_connect_timeout_ms(10000);
  gw->set_max_sessions(100000);
  gw->set_max_message_bytes(65536);
  NullTransport transport;
  NullObserver observer;
  absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  Hub hub(config, "gw", &transport, &observer, [&now] { return now; });

  const std::string token = testing::MakeToken(R"({"sub":"42","meta":{"a":[1,2,{"b":null}]}})", "demo-secret-123");
  v1::ClientCommand pb_connect;
  pb_connect.set_id(1);
  pb_connect.mutable_connect()->set_token(token);
  std::string pb_body = pb_connect.SerializeAsString();
  const std::vector<std::pair<Wire, std::string>> seeds = {
      {Wire::kCentrifugeJson, absl::StrCat(R"({"id":1,"connect":{"token":")", token, R"(","name":"x"}})")},
      {Wire::kCentrifugeJson, "{}\n{\"id\":2,\"ping\":{}}\n{\"id\":3,\"refresh\":{\"token\":\"a.b.c\"}}"},
      {Wire::kCentrifugeProtobuf, std::string(1, static_cast<char>(pb_body.size() & 0x7F)) + pb_body},
      {Wire::kPusher, R"({"event":"pusher:signin","data":{"auth":"demo-key:00","user_data":"{\"id\":\"1\"}"}})"},
      {Wire::kPusher, R"({"event":"pusher:subscribe","data":"{\"channel\":\"x\"}","channel":"x"})"},
  };
  std::mt19937 rng(20261123);
  ConnId next = 1;
  for (int round = 0; round < 3000; ++round) {
    const auto& [wire, seed] = seeds[rng() % seeds.size()];
    ConnId id = next++;
    ConnectionMeta meta;
    meta.wire = wire;
    meta.pusher_key = rng() % 8 ? "demo-key" : Mutate("demo-key", rng);
    meta.pusher_protocol = "7";
    hub.OnOpen(id, meta);
    // A good frame first half the time, so mutations also hit connected sessions.
    if (rng() % 2) hub.OnFrame(id, seed, wire == Wire::kCentrifugeProtobuf);
    for (int k = 0; k < 3; ++k) hub.OnFrame(id, Mutate(seed, rng), (rng() % 4) == 0);
    now += absl::Seconds(static_cast<int>(rng() % 40));
    hub.OnTimer(id);
    if (rng() % 3 == 0) hub.OnClosed(id);
  }
  // Uni streams: mutated bodies.
  const std::string body = absl::StrCat(R"({"token":")", token, R"(","name":"curl"})");
  for (int round = 0; round < 500; ++round) {
    ConnectionMeta meta;
    meta.wire = Wire::kUniHttpStream;
    meta.connect_body = Mutate(body, rng);
    hub.OnOpen(next++, meta);
  }
  // Random bus payloads that parse as requests.
  for (int round = 0; round < 2000; ++round) {
    std::string bytes(rng() % 64, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    v1::BusRequest req;
    if (!req.ParseFromString(bytes)) continue;
    req.set_format_version(1);
    (void)hub.HandleBusRequest(req);
  }
  // Whatever happened, the books balance.
  EXPECT_EQ(static_cast<size_t>(observer.opened - observer.closed), hub.session_count());
  EXPECT_LE(hub.session_count(), hub.connection_count());
  EXPECT_GT(hub.stats().bad_frames, 0u);
  EXPECT_GT(observer.opened, 0);
}

}  // namespace
}  // namespace switchboard::gateway
