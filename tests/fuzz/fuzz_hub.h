// What the hub fuzz targets share: a config with fixed secrets (the seed
// corpus holds tokens signed with them, see make_seeds.py), a transport that
// records what the hub sends, and the input format: a sequence of records
//   [kind: 1 byte][length: 2 bytes little-endian][payload: length bytes]
// where kind picks what the harness does with the payload (per target).
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "common/json_depth.h"
#include "gateway/hub.h"
#include "nlohmann/json.hpp"
#include "switchboard/v1/config.pb.h"

namespace switchboard::fuzz {

inline constexpr char kSecret[] = "fuzz-secret-0123456789";
inline constexpr char kKey[] = "fuzz-key";

inline v1::Config FuzzConfig() {
  v1::Config config;
  config.set_cluster("fuzz");
  auto* app = config.add_apps();
  app->set_id("demo");
  app->set_key(kKey);
  app->set_secret(kSecret);
  auto* other = config.add_apps();
  other->set_id("strict");
  other->set_key("strict-key");
  other->set_secret(kSecret);
  other->set_audience("chat");
  other->set_issuer("auth");
  config.set_default_app("demo");
  auto* gw = config.mutable_gateway();
  gw->set_ping_interval_s(25);
  gw->set_pong_timeout_s(8);
  gw->set_connect_timeout_ms(10000);
  gw->set_max_sessions(1000);
  gw->set_max_unsigned(100);
  gw->set_pusher_signin_timeout_s(30);
  gw->set_max_message_bytes(65536);
  gw->set_client_expired_close_delay_s(25);
  return config;
}

struct Record {
  uint8_t kind;
  std::string_view payload;
};

inline std::vector<Record> SplitRecords(const uint8_t* data, size_t size) {
  std::vector<Record> out;
  size_t at = 0;
  while (at + 3 <= size && out.size() < 64) {
    const uint8_t kind = data[at];
    const size_t len = std::min<size_t>(data[at + 1] | (data[at + 2] << 8), size - at - 3);
    out.push_back({kind, std::string_view(reinterpret_cast<const char*>(data + at + 3), len)});
    at += 3 + len;
  }
  return out;
}

class RecordingTransport final : public gateway::Transport {
 public:
  bool Send(gateway::ConnId conn, std::string frame, bool) override {
    last_sent[conn] = std::move(frame);
    ++sends;
    return true;
  }
  void Close(gateway::ConnId conn, int code, const std::string&) override { closed[conn] = code; }
  void ArmTimer(gateway::ConnId, absl::Duration) override {}
  void NotifyWhenWritten(gateway::ConnId) override {}

  std::map<gateway::ConnId, std::string> last_sent;
  std::map<gateway::ConnId, int> closed;
  size_t sends = 0;
};

class CountingObserver final : public gateway::SessionObserver {
 public:
  void OnSessionOpened(const v1::SessionRecord& r) override {
    ++opened;
    last_user = r.user_id();
    last_app = r.app_id();
  }
  void OnSessionClosed(const std::string&) override { ++closed; }
  int opened = 0;
  int closed = 0;
  std::string last_user, last_app;
};

// One run's hub with its recording transport, observer and fake clock.
struct FuzzedHub {
  FuzzedHub() : hub(Config(), "gw-fuzz", &transport, &observer, [this] { return now; }) {}
  static const v1::Config& Config() {
    static const v1::Config config = FuzzConfig();
    return config;
  }
  RecordingTransport transport;
  CountingObserver observer;
  absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  gateway::Hub hub;
};

// A server message (SendToUser, as control sends it on the bus) to the last
// user that opened a session: its payload the fuzzer's bytes, as JSON when
// they are JSON, else as a JSON string. Every protocol's Deliver runs.
inline void SendToLastUser(gateway::Hub& hub, const CountingObserver& observer, std::string_view payload) {
  if (observer.last_user.empty()) return;
  v1::BusRequest req;
  req.set_format_version(1);
  auto* s = req.mutable_send();
  s->set_app_id(observer.last_app);
  s->set_user_id(observer.last_user);
  s->set_event("fuzz");
  std::string text(payload);
  if (JsonDepthWithin(text) && nlohmann::json::accept(text)) {
    s->set_data_json(text);
  } else {
    s->set_data_json(nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  (void)hub.HandleBusRequest(req);
}

// Ends a run the way real connections end: timers fire (pings, expiry), the
// control service terminates the user, the sockets go. Checks the books.
inline void Finish(gateway::Hub& hub, absl::Time& now, CountingObserver& observer,
                   const std::vector<gateway::ConnId>& conns) {
  for (int step : {30, 10, 3600}) {
    now += absl::Seconds(step);
    for (auto id : conns) hub.OnTimer(id);
  }
  if (!observer.last_user.empty()) {
    v1::BusRequest req;
    req.set_format_version(1);
    req.mutable_terminate()->set_app_id(observer.last_app);
    req.mutable_terminate()->set_user_id(observer.last_user);
    (void)hub.HandleBusRequest(req);
  }
  for (auto id : conns) hub.OnClosed(id);
  if (hub.session_count() != 0 || observer.opened != observer.closed) __builtin_trap();
  // FUZZ_REPORT=1 with -runs=0 over the seeds shows which of them connect.
  static const bool report = std::getenv("FUZZ_REPORT") != nullptr;
  if (report) std::fprintf(stderr, "FUZZ_REPORT sessions_opened=%d refreshes=%llu\n", observer.opened,
                           static_cast<unsigned long long>(hub.stats().refreshes));
}

}  // namespace switchboard::fuzz
