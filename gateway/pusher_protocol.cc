#include "gateway/pusher_protocol.h"

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/crypto.h"
#include "common/json_depth.h"
#include "gateway/centrifuge_codec.h"
#include "nlohmann/json.hpp"

namespace switchboard::gateway {
namespace {

using nlohmann::json;

// Peer-supplied text may be invalid UTF-8 (URL parts, echoed names): replace
// it rather than let the serializer throw.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Depth first: nlohmann copies and dumps recursively, so deeply nested peer
// input must never become a json value.
json ParseShallow(std::string_view text) {
  if (!JsonDepthWithin(text)) return json(json::value_t::discarded);
  return json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}

std::string NewSocketId() {
  static thread_local absl::BitGen gen;
  return absl::StrCat(absl::Uniform<uint32_t>(gen, 1, 0xFFFFFFFFu), ".", absl::Uniform<uint32_t>(gen, 1, 0xFFFFFFFFu));
}

// Pusher sends `data` as a JSON-encoded string.
void SendEvent(ConnectionHost& host, const std::string& event, const std::string& data_json,
               const std::string& channel = "") {
  json frame = {{"event", event}, {"data", data_json}};
  if (!channel.empty()) frame["channel"] = channel;
  host.Send(Dump(frame), false);
}

void SendError(ConnectionHost& host, int code, const std::string& message) {
  json data = {{"message", message}, {"code", code ? json(code) : json(nullptr)}};
  host.Send(Dump(json({{"event", "pusher:error"}, {"data", data}})), false);
}

}  // namespace

void PusherProtocol::OnOpen(ConnectionHost& host) {
  const ConnectionMeta& meta = host.meta();
  const v1::AppConfig* app = nullptr;
  for (const auto& a : host.config().apps()) {
    if (a.key() == meta.pusher_key) app = &a;
  }
  if (app == nullptr) {
    ++host.stats().bad_frames;
    SendError(host, 4001, "Could not find app by key " + meta.pusher_key.substr(0, 64));
    host.Close(4001, "app not found");
    return;
  }
  // Protocol 7 is what this server speaks; 5 and 6 differ only in what we do
  // not support (channels), so they are served too.
  const std::string& proto = meta.pusher_protocol;
  if (!proto.empty() && proto != "5" && proto != "6" && proto != "7") {
    ++host.stats().bad_frames;
    SendError(host, 4007, "Unsupported protocol version " + proto.substr(0, 16));
    host.Close(4007, "unsupported protocol version");
    return;
  }
  // Only a signed-in connection is of use here: the rest must sign in in time,
  // and only so many may wait to.
  if (!host.Accept(host.Now() + absl::Seconds(host.config().gateway().pusher_signin_timeout_s()))) {
    SendError(host, 4100, "Over capacity");
    host.Close(4100, "over capacity");
    return;
  }
  app_id_ = app->id();
  socket_id_ = NewSocketId();
  json established = {{"socket_id", socket_id_}, {"activity_timeout", host.config().gateway().ping_interval_s()}};
  SendEvent(host, "pusher:connection_established", Dump(established));
}

void PusherProtocol::OnFrame(ConnectionHost& host, std::string_view data, bool binary) {
  // Any frame is activity: the next ping waits a whole timeout again.
  host.Activity(/*reset_ping=*/true);
  json msg = binary ? json() : ParseShallow(data);
  if (!msg.is_object() || !msg.contains("event") || !msg["event"].is_string()) {
    ++host.stats().bad_frames;
    SendError(host, 0, "Malformed message: expected a JSON object with an event");
    return;
  }
  const std::string event = msg["event"].get<std::string>();
  json payload = msg.contains("data") ? std::move(msg["data"]) : json::object();
  if (payload.is_string()) {
    // Either form is seen in the wild: an object, or an object encoded as a string.
    json parsed = ParseShallow(payload.get_ref<const std::string&>());
    if (!parsed.is_discarded()) payload = std::move(parsed);
  }

  if (event == "pusher:ping") {
    SendEvent(host, "pusher:pong", "{}");
  } else if (event == "pusher:pong") {
    // Activity already recorded above.
  } else if (event == "pusher:signin") {
    if (!payload.is_object() || !payload.contains("auth") || !payload["auth"].is_string() ||
        !payload.contains("user_data") || !payload["user_data"].is_string()) {
      ++host.stats().bad_frames;
      SendError(host, 0, "pusher:signin needs data with auth and user_data strings");
      return;
    }
    Signin(host, payload["auth"].get<std::string>(), payload["user_data"].get<std::string>());
  } else if (event == "pusher:subscribe") {
    std::string ch = payload.is_object() && payload.contains("channel") && payload["channel"].is_string()
                         ? payload["channel"].get<std::string>().substr(0, 300)
                         : std::string();
    Subscribe(host, ch);
  } else if (event == "pusher:unsubscribe") {
    std::string ch = payload.is_object() && payload.contains("channel") && payload["channel"].is_string()
                         ? payload["channel"].get<std::string>()
                         : std::string();
    const std::optional<v1::SessionRecord> record = host.session();
    if (server_to_user_ && record.has_value() && ch == ServerToUserChannel(record->user_id())) {
      server_to_user_ = false;  // Pusher answers an unsubscribe with nothing
    } else {
      SendError(host, 0, "Channel subscriptions are not supported by this server");
    }
  } else if (absl::StartsWith(event, "client-")) {
    SendError(host, 0, "Client events are not supported by this server");
  } else {
    SendError(host, 0, "Unsupported event " + event.substr(0, 100));
  }
}

void PusherProtocol::Signin(ConnectionHost& host, const std::string& auth, const std::string& user_data) {
  const v1::AppConfig* app = FindApp(host.config(), app_id_);
  if (app == nullptr) return;  // cannot happen: resolved at open
  if (host.session().has_value()) {
    SendError(host, 0, "Already signed in");
    return;
  }
  // auth = "<key>:<hex HMAC-SHA256(secret, socket_id + '::user::' + user_data)>"
  const std::string expected = app->key() + ":" + HmacSha256Hex(app->secret(), socket_id_ + "::user::" + user_data);
  if (!ConstantTimeEquals(auth, expected)) {
    ++host.stats().bad_tokens;
    SendError(host, 0, "Invalid signin signature");
    return;
  }
  json user = ParseShallow(user_data);
  if (!user.is_object() || !user.contains("id") || !user["id"].is_string() || user["id"].get<std::string>().empty() ||
      user["id"].get<std::string>().size() > kMaxIdLength) {
    ++host.stats().bad_frames;
    SendError(host, 0, "user_data must be a JSON object with a non-empty string id");
    return;
  }
  std::string user_info = user.contains("user_info") ? Dump(user["user_info"]) : "";
  if (user_info.size() > MaxSessionBytes(host.config())) {
    ++host.stats().bad_frames;
    SendError(host, 0, "user_info is larger than " + std::to_string(MaxSessionBytes(host.config())) + " bytes");
    return;
  }
  if (!host.HasRoom()) {
    SendError(host, 4100, "Over capacity");
    host.Close(4100, "over capacity");
    return;
  }
  v1::SessionRecord record = host.NewRecord(socket_id_, app->id(), user["id"].get<std::string>());
  record.set_app_name(host.meta().client_name.substr(0, kMaxIdLength));
  record.set_app_version(host.meta().client_version.substr(0, kMaxIdLength));
  record.set_meta_json(std::move(user_info));
  if (!host.StartSession(std::move(record), absl::InfiniteFuture())) {
    SendError(host, 0, "Already signed in");
    return;
  }
  SendEvent(host, "pusher:signin_success", Dump(json({{"user_data", user_data}})));
}

void PusherProtocol::Subscribe(ConnectionHost& host, const std::string& channel) {
  auto refuse = [&](const char* type, const std::string& error, int status) {
    json err = {{"type", type}, {"error", error}, {"status", status}};
    host.Send(Dump(json({{"event", "pusher:subscription_error"}, {"channel", channel}, {"data", err}})), false);
  };
  if (!absl::StartsWith(channel, "#server-to-user-")) {
    refuse("UnsupportedFeature", "Channel subscriptions are not supported by this server", 501);
    return;
  }
  // Only a signed-in connection, and only to its own user's channel.
  const std::optional<v1::SessionRecord> record = host.session();
  if (!record.has_value()) {
    refuse("AuthError", "Sign in before subscribing to " + channel, 401);
    return;
  }
  if (channel != ServerToUserChannel(record->user_id())) {
    refuse("AuthError", "Not the signed-in user's channel", 403);
    return;
  }
  server_to_user_ = true;
  SendEvent(host, "pusher_internal:subscription_succeeded", "{}", channel);
}

DeliverResult PusherProtocol::Deliver(ConnectionHost& host, const ServerMessage& message) {
  if (!server_to_user_) return DeliverResult::kNotSubscribed;
  // Pusher's `data` is a string: a string payload goes as it is, anything
  // else as its JSON text (what the server SDKs send for an object); text
  // from Pusher's own REST API goes exactly as it came.
  std::string frame = message.Frame(Wire::kPusher, [&] {
    std::string data = message.data_json;
    if (!message.pusher_text_verbatim && !data.empty() && data.front() == '"') {
      json parsed = ParseShallow(data);
      if (parsed.is_string()) data = parsed.get<std::string>();
    }
    return Dump(json({{"event", message.event}, {"channel", ServerToUserChannel(message.user_id)}, {"data", data}}));
  });
  if (!host.Send(std::move(frame), false)) return DeliverResult::kSlow;
  return DeliverResult::kDelivered;
}

void PusherProtocol::SendPing(ConnectionHost& host) { SendEvent(host, "pusher:ping", "{}"); }

int PusherProtocol::OnClose(ConnectionHost& host, int code, const std::string& reason) {
  int pusher_code = code;
  if (code == close_code::kNoPong) {
    pusher_code = 4201;  // Pusher's "pong reply not received"
  } else if (code >= 3000 && (code < 4000 || code >= 4300)) {
    const bool reconnect = code < 3500 || (code >= 4300 && code < 4500);
    pusher_code = reconnect ? 4200 : 4009;
  }
  if (code == close_code::kStale) {
    SendError(host, 4009, "Connection not authorized within timeout");
    return 4009;
  }
  if (pusher_code == 4009) SendError(host, 4009, reason);
  return pusher_code;
}

}  // namespace switchboard::gateway
