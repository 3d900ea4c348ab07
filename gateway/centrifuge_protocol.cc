#include "gateway/centrifuge_protocol.h"

#include <algorithm>

#include "common/config.h"
#include "common/json_depth.h"
#include "common/ids.h"
#include "gateway/centrifuge_codec.h"
#include "gateway/jwt_verifier.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace switchboard::gateway {
namespace {

// Whole seconds left until `expires_at`, rounded down: the SDK refreshes
// when the ttl runs out, so it must never be told more time than it has.
uint32_t TtlSeconds(absl::Time expires_at, absl::Time now) {
  if (expires_at == absl::InfiniteFuture()) return 0;
  const int64_t left = absl::ToInt64Seconds(expires_at - now);  // truncates toward zero
  return static_cast<uint32_t>(std::clamp<int64_t>(left, 0, UINT32_MAX));
}

TokenPolicy PolicyOf(const v1::AppConfig& app) { return TokenPolicy{app.secret(), app.audience(), app.issuer()}; }

// What a connect request turns into once checked.
struct Admission {
  bool ok = false;
  v1::SessionRecord record;
  absl::Time expires_at = absl::InfiniteFuture();
};

// The checks every Centrifugo transport shares: app, room, token, sizes.
// On failure it has already closed the connection or, for a token that only
// expired, returns with `expired` set and leaves the answer to the caller.
Admission Admit(ConnectionHost& host, const v1::ClientConnectRequest& req, bool* expired) {
  *expired = false;
  Admission out;
  const v1::Config& config = host.config();
  const std::string app_id = host.meta().app_id.empty() ? config.default_app() : host.meta().app_id;
  const v1::AppConfig* app = FindApp(config, app_id);
  if (app == nullptr) {
    ++host.stats().bad_frames;
    host.Close(close_code::kBadRequest, "unknown app");
    return out;
  }
  if (!host.HasRoom()) {
    host.Close(close_code::kTryAgainLater, "gateway full");
    return out;
  }
  auto result = JwtVerifier::Verify(req.token(), PolicyOf(*app), host.Now());
  if (!result.status.ok()) {
    spdlog::debug("token rejected: {}", std::string(result.status.message()));
    if (result.error == TokenError::kExpired) {
      ++host.stats().expired_tokens;
      *expired = true;
    } else {
      ++host.stats().bad_tokens;
      host.Close(close_code::kInvalidToken, "invalid token");
    }
    return out;
  }
  if (req.name().size() > kMaxIdLength || req.version().size() > kMaxIdLength ||
      result.claims.sub.size() > kMaxIdLength) {
    host.Close(close_code::kBadRequest, "bad request");
    return out;
  }
  if (result.claims.meta_json.size() > MaxSessionBytes(config)) {
    // Kept for the session's life and carried in every answer about it:
    // bounded where it enters.
    ++host.stats().bad_frames;
    host.Close(close_code::kBadRequest, "session data too large");
    return out;
  }
  out.record = host.NewRecord(NewUuid(), app->id(), result.claims.sub);
  out.record.set_app_name(req.name());
  out.record.set_app_version(req.version());
  out.record.set_meta_json(result.claims.meta_json);
  out.expires_at = result.claims.expires_at;
  out.ok = true;
  return out;
}

}  // namespace

// --- bidirectional (WebSocket) ---------------------------------------------

void CentrifugeProtocol::OnOpen(ConnectionHost&) {
  // Nothing to say first: the client speaks (connect) within the deadline.
}

void CentrifugeProtocol::OnFrame(ConnectionHost& host, std::string_view data, bool is_binary) {
  if (is_binary != binary()) {
    ++host.stats().bad_frames;
    host.Close(close_code::kBadRequest, "bad request");
    return;
  }
  auto commands = Decode(data);
  if (!commands.ok()) {
    ++host.stats().bad_frames;
    spdlog::debug("bad frame: {}", std::string(commands.status().message()));
    host.Close(close_code::kBadRequest, "bad request");
    return;
  }
  for (const auto& cmd : *commands) {
    // A command may close the connection; stop there.
    if (host.closing()) return;
    HandleCommand(host, cmd);
  }
}

void CentrifugeProtocol::HandleCommand(ConnectionHost& host, const v1::ClientCommand& cmd) {
  if (!host.has_session()) {
    if (!cmd.has_connect() || cmd.id() == 0) {
      ++host.stats().bad_frames;
      host.Close(close_code::kBadRequest, "bad request");
      return;
    }
    HandleConnect(host, cmd);
    return;
  }
  if (cmd.id() == 0) {
    // An empty command is the pong to our ping; async sends are not served.
    host.Activity(/*reset_ping=*/false);
    return;
  }
  if (cmd.has_connect()) {
    ++host.stats().bad_frames;
    host.Close(close_code::kBadRequest, "bad request");
    return;
  }
  if (cmd.has_ping()) {
    v1::ClientReply reply;
    reply.set_id(cmd.id());
    reply.mutable_ping();
    Reply(host, reply);
    return;
  }
  if (cmd.has_refresh()) {
    HandleRefresh(host, cmd);
    return;
  }
  // Channels, RPC and presence are not part of this product (yet).
  Error(host, cmd.id(), error_code::kNotAvailable, "not available");
}

void CentrifugeProtocol::HandleConnect(ConnectionHost& host, const v1::ClientCommand& cmd) {
  bool expired = false;
  Admission a = Admit(host, cmd.connect(), &expired);
  if (expired) {
    // As Centrifugo: a connect error, not a close. The SDKs answer it by
    // fetching a new token (getToken) and connecting again.
    Error(host, cmd.id(), error_code::kTokenExpired, "token expired");
    return;
  }
  if (!a.ok) return;
  const std::string client_id = a.record.client_id();
  const std::string channel = PersonalChannel(FindApp(host.config(), a.record.app_id()), SafeUtf8(a.record.user_id()));
  if (!host.StartSession(std::move(a.record), a.expires_at)) {
    host.Close(close_code::kBadRequest, "bad request");
    return;
  }
  v1::ClientReply reply;
  reply.set_id(cmd.id());
  auto* r = reply.mutable_connect();
  r->set_client(client_id);
  // Subscribed on the server side to the user's personal channel (what
  // SendToUser publishes on), as Centrifugo's
  // subscribe_to_user_personal_channel does.
  (*r->mutable_subs())[channel];
  r->set_version(ServerVersion());
  r->set_ping(host.config().gateway().ping_interval_s());
  r->set_pong(true);
  r->set_node(host.gateway_id());
  if (a.expires_at != absl::InfiniteFuture()) {
    r->set_expires(true);
    r->set_ttl(TtlSeconds(a.expires_at, host.Now()));
  }
  Reply(host, reply);
}

void CentrifugeProtocol::HandleRefresh(ConnectionHost& host, const v1::ClientCommand& cmd) {
  // Centrifugo's refresh: a new token for the same user extends the session;
  // an expired one ends it as expired, anything else as an invalid token.
  if (cmd.refresh().token().empty()) {
    ++host.stats().bad_frames;
    host.Close(close_code::kBadRequest, "bad request");
    return;
  }
  const std::optional<v1::SessionRecord> record = host.session();
  const v1::AppConfig* app = record.has_value() ? FindApp(host.config(), record->app_id()) : nullptr;
  if (app == nullptr) {
    host.Close(close_code::kBadRequest, "bad request");
    return;
  }
  auto result = JwtVerifier::Verify(cmd.refresh().token(), PolicyOf(*app), host.Now());
  if (!result.status.ok() || result.claims.sub != record->user_id()) {
    ++host.stats().bad_tokens;
    if (!result.status.ok() && result.error == TokenError::kExpired) {
      host.Close(close_code::kExpired, "connection expired");
    } else {
      host.Close(close_code::kInvalidToken, "invalid token");
    }
    return;
  }
  ++host.stats().refreshes;
  host.ExtendSession(result.claims.expires_at);
  v1::ClientReply reply;
  reply.set_id(cmd.id());
  auto* r = reply.mutable_refresh();
  r->set_client(record->client_id());
  r->set_version(ServerVersion());
  if (result.claims.expires_at != absl::InfiniteFuture()) {
    r->set_expires(true);
    r->set_ttl(TtlSeconds(result.claims.expires_at, host.Now()));
  }
  Reply(host, reply);
}

void CentrifugeProtocol::Error(ConnectionHost& host, uint32_t cmd_id, uint32_t code, const std::string& message) {
  v1::ClientReply reply;
  reply.set_id(cmd_id);
  reply.mutable_error()->set_code(code);
  reply.mutable_error()->set_message(message);
  Reply(host, reply);
}

void CentrifugeProtocol::SendPing(ConnectionHost& host) { host.Send(Ping(), binary()); }

int CentrifugeProtocol::OnClose(ConnectionHost&, int code, const std::string&) {
  // Centrifugo's SDKs read the close frame itself.
  return code;
}

absl::StatusOr<std::vector<v1::ClientCommand>> CentrifugeJsonProtocol::Decode(std::string_view frame) const {
  return CentrifugeJsonCodec::DecodeCommands(frame);
}
std::string CentrifugeJsonProtocol::Encode(const v1::ClientReply& reply) const {
  return CentrifugeJsonCodec::EncodeReply(reply);
}
std::string CentrifugeJsonProtocol::Ping() const { return CentrifugeJsonCodec::EncodePing(); }

absl::StatusOr<std::vector<v1::ClientCommand>> CentrifugeProtobufProtocol::Decode(std::string_view frame) const {
  return CentrifugeProtobufCodec::DecodeCommands(frame);
}
std::string CentrifugeProtobufProtocol::Encode(const v1::ClientReply& reply) const {
  return CentrifugeProtobufCodec::EncodeReply(reply);
}
std::string CentrifugeProtobufProtocol::Ping() const { return CentrifugeProtobufCodec::EncodePing(); }

// --- unidirectional HTTP stream --------------------------------------------

void CentrifugeUniStreamProtocol::OnOpen(ConnectionHost& host) {
  // The one command of a unidirectional connection is its body.
  const std::string& body = host.meta().connect_body;
  if (body.size() > host.config().gateway().max_message_bytes()) {
    ++host.stats().bad_frames;
    host.Close(close_code::kMessageTooBig, "message too big");
    return;
  }
  v1::ClientConnectRequest req;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  if (!JsonDepthWithin(body) || !google::protobuf::util::JsonStringToMessage(body, &req, opts).ok()) {
    ++host.stats().bad_frames;
    host.Close(close_code::kBadRequest, "bad request");
    return;
  }
  bool expired = false;
  Admission a = Admit(host, req, &expired);
  if (expired) {
    // No reply channel to ask for a new token: the stream ends as expired
    // (a reconnect code), and the client comes back with a fresh token.
    host.Close(close_code::kExpired, "connection expired");
    return;
  }
  if (!a.ok) return;
  const std::string client_id = a.record.client_id();
  const std::string channel = PersonalChannel(FindApp(host.config(), a.record.app_id()), SafeUtf8(a.record.user_id()));
  if (!host.StartSession(std::move(a.record), a.expires_at)) {
    host.Close(close_code::kBadRequest, "bad request");
    return;
  }
  v1::ClientPush push;
  auto* c = push.mutable_connect();
  c->set_client(client_id);
  (*c->mutable_subs())[channel];
  c->set_version(ServerVersion());
  c->set_ping(host.config().gateway().ping_interval_s());
  c->set_node(host.gateway_id());
  if (a.expires_at != absl::InfiniteFuture()) {
    c->set_expires(true);
    c->set_ttl(TtlSeconds(a.expires_at, host.Now()));
  }
  Push(host, push);
}

void CentrifugeUniStreamProtocol::OnFrame(ConnectionHost& host, std::string_view, bool) {
  ++host.stats().bad_frames;
  host.Close(close_code::kBadRequest, "bad request");
}

void CentrifugeUniStreamProtocol::SendPing(ConnectionHost& host) { host.Send("{}\n", false); }

int CentrifugeUniStreamProtocol::OnClose(ConnectionHost& host, int code, const std::string& reason) {
  // The stream's last line says why it ends.
  v1::ClientPush push;
  push.mutable_disconnect()->set_code(static_cast<uint32_t>(code));
  push.mutable_disconnect()->set_reason(reason);
  Push(host, push);
  return code;
}

namespace {

// {"channel":<channel>,"pub":{"data":<data_json>}}: Centrifugo's JSON
// encoding writes a publication's data as raw JSON, which the protobuf JSON
// printer (bytes as base64) cannot.
std::string JsonPublicationPush(const std::string& channel, const std::string& data_json) {
  std::string out = "{\"channel\":";
  out += nlohmann::json(channel).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  out += ",\"pub\":{\"data\":";
  out += data_json;
  out += "}}";
  return out;
}

}  // namespace

DeliverResult CentrifugeProtocol::Deliver(ConnectionHost& host, const ServerMessage& message) {
  std::string frame = message.Frame(binary() ? Wire::kCentrifugeProtobuf : Wire::kCentrifugeJson, [&] {
    return EncodePublication(PersonalChannel(FindApp(host.config(), message.app_id), message.user_id),
                             message.data_json);
  });
  if (!host.Send(std::move(frame), binary())) {
    return DeliverResult::kSlow;
  }
  return DeliverResult::kDelivered;
}

std::string CentrifugeJsonProtocol::EncodePublication(const std::string& channel, const std::string& data_json) const {
  return "{\"push\":" + JsonPublicationPush(channel, data_json) + "}";
}

std::string CentrifugeProtobufProtocol::EncodePublication(const std::string& channel,
                                                          const std::string& data_json) const {
  v1::ClientReply reply;
  reply.mutable_push()->set_channel(channel);
  reply.mutable_push()->mutable_pub()->set_data(data_json);
  return Encode(reply);
}

DeliverResult CentrifugeUniStreamProtocol::Deliver(ConnectionHost& host, const ServerMessage& message) {
  std::string line = message.Frame(Wire::kUniHttpStream, [&] {
    return JsonPublicationPush(PersonalChannel(FindApp(host.config(), message.app_id), message.user_id),
                               message.data_json) + "\n";
  });
  if (!host.Send(std::move(line), false)) {
    return DeliverResult::kSlow;
  }
  return DeliverResult::kDelivered;
}

void CentrifugeUniStreamProtocol::Push(ConnectionHost& host, const v1::ClientPush& push) {
  // One JSON object per line, the push itself (not wrapped in a reply).
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(push, &out, opts);
  host.Send(out + "\n", false);
}

}  // namespace switchboard::gateway
