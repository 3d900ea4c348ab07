// The Pusher Channels protocol 7 side of the hub: connection_established,
// ping/pong, pusher:signin. Only signed-in connections are sessions.
#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/crypto.h"
#include "common/json_depth.h"
#include "gateway/hub.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace switchboard::gateway {
namespace {

using nlohmann::json;

constexpr size_t kMaxIdLength = 256;

// Peer-supplied text may be invalid UTF-8 (URL parts, echoed names): replace
// it rather than let the serializer throw.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string NewSocketId() {
  static thread_local absl::BitGen gen;
  return absl::StrCat(absl::Uniform<uint32_t>(gen, 1, 0xFFFFFFFFu), ".", absl::Uniform<uint32_t>(gen, 1, 0xFFFFFFFFu));
}

}  // namespace

void Hub::PusherSend(ConnId id, const std::string& event, const std::string& data_json, const std::string& channel) {
  // Pusher sends `data` as a JSON-encoded string.
  json frame = {{"event", event}, {"data", data_json}};
  if (!channel.empty()) frame["channel"] = channel;
  transport_->Send(id, Dump(frame), false);
}

void Hub::PusherError(ConnId id, int code, const std::string& message) {
  json data = {{"message", message}, {"code", code ? json(code) : json(nullptr)}};
  transport_->Send(id, Dump(json({{"event", "pusher:error"}, {"data", data}})), false);
}

void Hub::PusherOpen(ConnId id, Conn& conn) {
  const v1::AppConfig* app = nullptr;
  for (const auto& a : config_.apps()) {
    if (a.key() == conn.meta.pusher_key) app = &a;
  }
  if (app == nullptr) {
    ++stats_.bad_frames;
    PusherError(id, 4001, "Could not find app by key " + conn.meta.pusher_key.substr(0, 64));
    CloseConn(id, conn, 4001, "app not found");
    return;
  }
  // Protocol 7 is what this server speaks; 5 and 6 differ only in what we do
  // not support (channels), so they are served too.
  const std::string& proto = conn.meta.pusher_protocol;
  if (!proto.empty() && proto != "5" && proto != "6" && proto != "7") {
    ++stats_.bad_frames;
    PusherError(id, 4007, "Unsupported protocol version " + proto.substr(0, 16));
    CloseConn(id, conn, 4007, "unsupported protocol version");
    return;
  }
  conn.app_id = app->id();
  conn.client_id = NewSocketId();
  conn.state = State::kConnected;
  const absl::Time now = clock_();
  conn.next_ping = now + absl::Seconds(config_.gateway().ping_interval_s());
  json established = {{"socket_id", conn.client_id}, {"activity_timeout", config_.gateway().ping_interval_s()}};
  PusherSend(id, "pusher:connection_established", Dump(established));
  Rearm(id, conn);
}

void Hub::PusherFrame(ConnId id, Conn& conn, std::string_view data, bool binary) {
  // Any frame is activity: the next ping waits a whole timeout again.
  conn.next_ping = clock_() + absl::Seconds(config_.gateway().ping_interval_s());
  conn.pong_deadline = absl::InfiniteFuture();
  Rearm(id, conn);
  // Depth first: nlohmann copies and dumps recursively, so a deeply nested
  // frame must never become a json value.
  json msg = binary || !JsonDepthWithin(data) ? json()
                                                : json::parse(data.begin(), data.end(), nullptr, /*allow_exceptions=*/false);
  if (!msg.is_object() || !msg.contains("event") || !msg["event"].is_string()) {
    ++stats_.bad_frames;
    PusherError(id, 0, "Malformed message: expected a JSON object with an event");
    return;
  }
  const std::string event = msg["event"].get<std::string>();
  json payload = msg.contains("data") ? msg["data"] : json::object();
  if (payload.is_string()) {
    // Either form is seen in the wild: an object, or an object encoded as a string.
    const std::string& text = payload.get_ref<const std::string&>();
    json parsed = JsonDepthWithin(text) ? json::parse(text, nullptr, false) : json(json::value_t::discarded);
    if (!parsed.is_discarded()) payload = std::move(parsed);
  }

  if (event == "pusher:ping") {
    PusherSend(id, "pusher:pong", "{}");
  } else if (event == "pusher:pong") {
    // Activity already recorded above.
  } else if (event == "pusher:signin") {
    if (!payload.is_object() || !payload.contains("auth") || !payload["auth"].is_string() ||
        !payload.contains("user_data") || !payload["user_data"].is_string()) {
      ++stats_.bad_frames;
      PusherError(id, 0, "pusher:signin needs data with auth and user_data strings");
      return;
    }
    PusherSignin(id, conn, payload["auth"].get<std::string>(), payload["user_data"].get<std::string>());
  } else if (event == "pusher:subscribe") {
    std::string ch = payload.is_object() && payload.contains("channel") && payload["channel"].is_string()
                         ? payload["channel"].get<std::string>().substr(0, 200)
                         : std::string();
    json err = {{"type", "UnsupportedFeature"},
                {"error", "Channel subscriptions are not supported by this server"},
                {"status", 501}};
    json frame = {{"event", "pusher:subscription_error"}, {"channel", ch}, {"data", err}};
    transport_->Send(id, Dump(frame), false);
  } else if (event == "pusher:unsubscribe") {
    PusherError(id, 0, "Channel subscriptions are not supported by this server");
  } else if (absl::StartsWith(event, "client-")) {
    PusherError(id, 0, "Client events are not supported by this server");
  } else {
    PusherError(id, 0, "Unsupported event " + event.substr(0, 100));
  }
}

void Hub::PusherSignin(ConnId id, Conn& conn, const std::string& auth, const std::string& user_data) {
  const v1::AppConfig* app = FindApp(config_, conn.app_id);
  if (app == nullptr) return;  // cannot happen: resolved at open
  if (conn.session) {
    PusherError(id, 0, "Already signed in");
    return;
  }
  // auth = "<key>:<hex HMAC-SHA256(secret, socket_id + '::user::' + user_data)>"
  const std::string expected =
      app->key() + ":" + HmacSha256Hex(app->secret(), conn.client_id + "::user::" + user_data);
  if (!ConstantTimeEquals(auth, expected)) {
    ++stats_.bad_tokens;
    PusherError(id, 0, "Invalid signin signature");
    return;
  }
  json user = JsonDepthWithin(user_data) ? json::parse(user_data, nullptr, false) : json(json::value_t::discarded);
  if (!user.is_object() || !user.contains("id") || !user["id"].is_string() || user["id"].get<std::string>().empty() ||
      user["id"].get<std::string>().size() > kMaxIdLength) {
    ++stats_.bad_frames;
    PusherError(id, 0, "user_data must be a JSON object with a non-empty string id");
    return;
  }
  if (index_.size() >= config_.gateway().max_sessions()) {
    PusherError(id, 4100, "Over capacity");
    CloseConn(id, conn, 4100, "over capacity");
    return;
  }
  v1::SessionRecord record = NewRecord(conn, conn.client_id, app->id(), user["id"].get<std::string>());
  record.set_app_name(conn.meta.client_name.substr(0, kMaxIdLength));
  record.set_app_version(conn.meta.client_version.substr(0, kMaxIdLength));
  if (user.contains("user_info")) record.set_meta_json(Dump(user["user_info"]));
  AddSession(id, conn, record);
  PusherSend(id, "pusher:signin_success", Dump(json({{"user_data", user_data}})));
}

}  // namespace switchboard::gateway
