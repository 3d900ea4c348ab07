// libFuzzer target: Pusher Channels protocol 7 through the real hub.
// Records: kind%4 == 0 a text frame, 1 a pusher:signin that the harness signs
// correctly for the current socket_id (payload: user_data), so mutations
// reach signed-in sessions; 2 time passes, timers fire and the payload is
// sent to the last signed-in user (SendToUser); 3 a new
// connection (payload: the app key in the URL, empty = the right key).
#include "common/crypto.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_hub.h"

using namespace switchboard;
using namespace switchboard::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedHub f;
  gateway::Hub& hub = f.hub;
  std::vector<gateway::ConnId> conns;
  std::string socket_id;
  auto open = [&](std::string_view key) {
    gateway::ConnectionMeta meta;
    meta.remote_addr = "10.1.2.3";
    meta.wire = gateway::Wire::kPusher;
    meta.pusher_key = key.empty() ? std::string(kKey) : std::string(key.substr(0, 32));
    meta.pusher_protocol = "7";
    meta.client_name = "js";
    conns.push_back(conns.size() + 1);
    hub.OnOpen(conns.back(), meta);
    socket_id.clear();
    auto it = f.transport.last_sent.find(conns.back());
    if (it == f.transport.last_sent.end()) return;
    auto msg = nlohmann::json::parse(it->second, nullptr, false);
    if (msg.is_object() && msg.value("event", "") == "pusher:connection_established") {
      auto inner = nlohmann::json::parse(msg.value("data", ""), nullptr, false);
      if (inner.is_object()) socket_id = inner.value("socket_id", "");
    }
  };
  open("");
  for (const Record& r : SplitRecords(data, size)) {
    switch (r.kind % 4) {
      case 0:
        hub.OnFrame(conns.back(), r.payload, false);
        break;
      case 1: {
        const std::string user_data(r.payload);
        nlohmann::json signin = {
            {"event", "pusher:signin"},
            {"data",
             {{"auth", std::string(kKey) + ":" + HmacSha256Hex(kSecret, socket_id + "::user::" + user_data)},
              {"user_data", user_data}}}};
        hub.OnFrame(conns.back(), signin.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), false);
        break;
      }
      case 2:
        f.now += absl::Seconds(static_cast<int64_t>(r.payload.size()));
        hub.OnTimer(conns.back());
        SendToLastUser(hub, f.observer, r.payload);
        break;
      default:
        if (conns.size() < 8) open(r.payload);
    }
  }
  Finish(hub, f.now, f.observer, conns);
  return 0;
}
