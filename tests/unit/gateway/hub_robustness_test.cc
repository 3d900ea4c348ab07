// Bad input never crashes the gateway: mutated and random frames for every
// wire, and random bus payloads, through the real hub and codecs (run under
// ASan/UBSan in the suite). Deterministic seeds, so a failure reproduces.
#include <random>

#include <map>

#include "absl/strings/str_cat.h"
#include "common/crypto.h"
#include "gateway/hub.h"
#include "switchboard/v1/client.pb.h"
#include "nlohmann/json.hpp"
#include "gtest/gtest.h"
#include "tests/unit/testing/gateway_config.h"
#include "tests/unit/testing/tokens.h"

namespace switchboard::gateway {
namespace {

class NullTransport : public Transport {
 public:
  bool Send(ConnId id, std::string frame, bool) override {
    bytes += frame.size();
    if (first.count(id) == 0) first[id] = frame;
    return true;
  }
  std::map<ConnId, std::string> first;  // the first frame sent to each connection
  void Close(ConnId, int code, const std::string&) override { last_code = code; }
  void ArmTimer(ConnId, absl::Duration) override {}
  void NotifyWhenWritten(ConnId) override {}
  size_t bytes = 0;
  int last_code = 0;
};

class NullObserver : public SessionObserver {
 public:
  void OnSessionOpened(const v1::SessionRecord& r) override {
    ++opened;
    ++by_protocol[r.transport() + "/" + r.protocol()];
  }
  void OnSessionClosed(const std::string&) override { ++closed; }
  int opened = 0;
  int closed = 0;
  std::map<std::string, int> by_protocol;
};

// A varint length prefix, as Centrifugo's protobuf framing has it.
std::string Varint(size_t n) {
  std::string out;
  while (n >= 0x80) {
    out.push_back(static_cast<char>((n & 0x7F) | 0x80));
    n >>= 7;
  }
  out.push_back(static_cast<char>(n));
  return out;
}

// A correctly signed pusher:signin for the socket_id in `established`.
std::string PusherSignin(const std::string& established, const std::string& secret) {
  auto msg = nlohmann::json::parse(established, nullptr, false);
  if (!msg.is_object() || msg.value("event", "") != "pusher:connection_established") return "";
  const std::string socket_id = nlohmann::json::parse(msg.value("data", "{}"))["socket_id"];
  const std::string user_data = R"({"id":"7"})";
  nlohmann::json data = {{"auth", "demo-key:" + HmacSha256Hex(secret, socket_id + "::user::" + user_data)},
                         {"user_data", user_data}};
  return nlohmann::json({{"event", "pusher:signin"}, {"data", data}}).dump();
}

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
  const v1::Config config = testing::DemoGatewayConfig(/*max_sessions=*/100000, /*max_unsigned=*/100);
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
      {Wire::kCentrifugeProtobuf, Varint(pb_body.size()) + pb_body},
      // Pusher: the good frame is a signin signed for the connection's socket_id (below).
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
    if (rng() % 2) {
      const std::string good = wire == Wire::kPusher ? PusherSignin(transport.first[id], "demo-secret-123") : seed;
      hub.OnFrame(id, good, wire == Wire::kCentrifugeProtobuf);
    }
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
    meta.connect_body = round % 10 == 0 ? body : Mutate(body, rng);
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
  // The good frames really connected on every wire, so the mutated frames
  // after them reached live sessions.
  EXPECT_GT(observer.by_protocol["websocket/json"], 0);
  EXPECT_GT(observer.by_protocol["websocket/protobuf"], 0);
  EXPECT_GT(observer.by_protocol["websocket/pusher"], 0);
  EXPECT_GT(observer.by_protocol["uni_http_stream/json"], 0);
}

}  // namespace
}  // namespace switchboard::gateway
