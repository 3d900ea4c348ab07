// libFuzzer target: the server API's message-sending calls as control builds
// them into bus requests (SendToUser, SendToClient, Pusher's trigger and
// batch_events, Centrifugo's publish and broadcast). First byte: the call
// (low 3 bits) and the encoding (bit 3: 0 = the JSON body switchboard-http
// turns into the request, 1 = the request as gRPC carries it). Whatever the
// body, the builders return requests or an error with a message, never a
// crash; what they return holds: a send to a configured app, an event of 1-200
// bytes, data that is one JSON text within control.max_send_bytes.
#include <cstdint>
#include <string>
#include <vector>

#include "control/api_logic.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "switchboard/v1/bus.pb.h"
#include "switchboard/v1/control.pb.h"
#include "tests/fuzz/fuzz_hub.h"

using namespace switchboard;

namespace {

const v1::Config& Config() {
  static const v1::Config config = [] {
    v1::Config c = fuzz::FuzzConfig();
    c.mutable_control()->set_max_send_bytes(2048);
    c.mutable_apps(1)->set_personal_channel_namespace("personal");
    return c;
  }();
  return config;
}

template <typename M>
bool Parse(bool binary, const std::string& body, M* m) {
  if (binary) return m->ParseFromString(body);
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;  // as grpc-gateway's unmarshaler
  return google::protobuf::util::JsonStringToMessage(body, m, opts).ok();
}

void Check(const absl::StatusOr<v1::BusRequest>& r) {
  if (!r.ok()) {
    if (r.status().message().empty()) __builtin_trap();  // every refusal says why
    return;
  }
  const auto& s = r->send();
  if (!r->has_send() || (s.app_id() != "demo" && s.app_id() != "strict")) __builtin_trap();
  if (s.event().empty() || s.event().size() > 200) __builtin_trap();
  if (s.user_id().empty() == s.only_client_id().empty()) __builtin_trap();  // one or the other
  if (s.data_json().size() > Config().control().max_send_bytes()) __builtin_trap();
  if (!nlohmann::json::accept(s.data_json())) __builtin_trap();
}

void Check(const absl::StatusOr<std::vector<v1::BusRequest>>& r) {
  if (!r.ok()) {
    if (r.status().message().empty()) __builtin_trap();
    return;
  }
  for (const auto& one : *r) Check(absl::StatusOr<v1::BusRequest>(one));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool binary = (data[0] & 8) != 0;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] & 7) {
    case 0: {
      v1::SendToUserRequest m;
      if (Parse(binary, body, &m)) Check(control::SendToUserRequest(Config(), m));
      break;
    }
    case 1: {
      v1::SendToClientRequest m;
      if (Parse(binary, body, &m)) Check(control::SendToClientRequest(Config(), m));
      break;
    }
    case 2: {
      v1::PusherTriggerRequest m;
      if (Parse(binary, body, &m)) Check(control::PusherTriggerRequests(Config(), m));
      break;
    }
    case 3: {
      v1::PusherTriggerBatchRequest m;
      if (Parse(binary, body, &m)) Check(control::PusherBatchRequests(Config(), m));
      break;
    }
    case 4: {
      v1::CentrifugoPublishRequest m;
      if (Parse(binary, body, &m)) Check(control::CentrifugoPublishRequest(Config(), m.channel(), m.data(), m.b64data()));
      break;
    }
    default: {
      v1::CentrifugoBroadcastRequest m;
      if (Parse(binary, body, &m)) {
        std::vector<std::string> channels(m.channels().begin(), m.channels().end());
        auto plan = control::CentrifugoBroadcastRequests(Config(), channels, m.data(), m.b64data());
        if (plan.ok()) {
          // One entry per channel, in order: a request or Centrifugo's error.
          if (plan->size() != channels.size()) __builtin_trap();
          for (const auto& ch : *plan) {
            if (ch.request.has_value() == (ch.error.code() != 0)) __builtin_trap();
            if (ch.request.has_value()) Check(*ch.request);
          }
        }
      }
      break;
    }
  }
  return 0;
}
