#include "gateway/hub.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "common/config.h"
#include "common/ids.h"
#include "gateway/centrifuge_codec.h"
#include "gateway/jwt_verifier.h"
#include "google/protobuf/util/json_util.h"
#include "spdlog/spdlog.h"

namespace switchboard::gateway {
namespace {

constexpr uint32_t kBusFormatVersion = 1;
constexpr size_t kMaxIdLength = 256;
constexpr char kServerVersion[] = "switchboard 0.1.0";

// Session fields travel in protobuf messages, whose strings must be UTF-8:
// one client's bytes must never make a gateway's answer unparseable. Invalid
// sequences become U+FFFD.
std::string SafeUtf8(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  size_t i = 0;
  while (i < in.size()) {
    const auto c = static_cast<unsigned char>(in[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= in.size();
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(in[i + k]);
      ok = (cc >> 6) == 0x2;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // No overlong forms, surrogates or code points past U+10FFFF.
    ok = ok && !(len == 2 && cp < 0x80) && !(len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) &&
         !(len == 4 && (cp < 0x10000 || cp > 0x10FFFF));
    if (ok) {
      out.append(in, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

const char* TransportName(Wire w) { return w == Wire::kUniHttpStream ? "uni_http_stream" : "websocket"; }

const char* ProtocolName(Wire w) {
  switch (w) {
    case Wire::kCentrifugeProtobuf:
      return "protobuf";
    case Wire::kPusher:
      return "pusher";
    default:
      return "json";
  }
}

// Whole seconds left until `expires_at`, rounded down: the SDK refreshes
// when the ttl runs out, so it must never be told more time than it has.
uint32_t TtlSeconds(absl::Time expires_at, absl::Time now) {
  if (expires_at == absl::InfiniteFuture()) return 0;
  const int64_t left = absl::ToInt64Seconds(expires_at - now);  // truncates toward zero
  return static_cast<uint32_t>(std::clamp<int64_t>(left, 0, UINT32_MAX));
}

// Close codes a terminate or disconnect may ask for: the application range of
// RFC 6455 (3000-4999), or 0 for the default. Control checks the same at its
// API; a gateway does not trust the bus to have done so.
bool ValidApiCloseCode(uint32_t code) { return code == 0 || (code >= 3000 && code <= 4999); }

}  // namespace

TokenPolicy PolicyOf(const v1::AppConfig& app) { return TokenPolicy{app.secret(), app.audience(), app.issuer()}; }

Hub::Hub(const v1::Config& config, std::string gateway_id, Transport* transport,
         SessionObserver* observer, Clock clock)
    : config_(config),
      gateway_id_(std::move(gateway_id)),
      transport_(transport),
      observer_(observer),
      clock_(std::move(clock)) {}

void Hub::OnOpen(ConnId id, ConnectionMeta meta) {
  Conn conn;
  conn.meta = std::move(meta);
  auto [it, inserted] = conns_.emplace(id, std::move(conn));
  if (!inserted) return;
  Conn& c = it->second;
  switch (c.meta.wire) {
    case Wire::kPusher:
      PusherOpen(id, c);
      return;
    case Wire::kUniHttpStream: {
      // The one command of a unidirectional connection is its body.
      v1::ClientCommand cmd;
      cmd.set_id(1);
      google::protobuf::util::JsonParseOptions opts;
      opts.ignore_unknown_fields = true;
      if (c.meta.connect_body.size() > config_.gateway().max_message_bytes()) {
        ++stats_.bad_frames;
        CloseConn(id, c, close_code::kMessageTooBig, "message too big");
        return;
      }
      if (!google::protobuf::util::JsonStringToMessage(c.meta.connect_body, cmd.mutable_connect(), opts).ok()) {
        ++stats_.bad_frames;
        CloseConn(id, c, close_code::kBadRequest, "bad request");
        return;
      }
      HandleConnect(id, c, cmd);
      return;
    }
    default:
      c.connect_deadline = clock_() + absl::Milliseconds(config_.gateway().connect_timeout_ms());
      Rearm(id, c);
  }
}

void Hub::OnFrame(ConnId id, std::string_view data, bool binary) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.state == State::kClosing) return;
  Conn& conn = it->second;
  if (conn.meta.wire == Wire::kPusher) {
    PusherFrame(id, conn, data, binary);
    return;
  }
  const bool protobuf = conn.meta.wire == Wire::kCentrifugeProtobuf;
  if (binary != protobuf || conn.meta.wire == Wire::kUniHttpStream) {
    ++stats_.bad_frames;
    CloseConn(id, conn, close_code::kBadRequest, "bad request");
    return;
  }
  auto commands =
      protobuf ? CentrifugeProtobufCodec::DecodeCommands(data) : CentrifugeJsonCodec::DecodeCommands(data);
  if (!commands.ok()) {
    ++stats_.bad_frames;
    spdlog::debug("conn {}: {}", id, std::string(commands.status().message()));
    CloseConn(id, conn, close_code::kBadRequest, "bad request");
    return;
  }
  for (const auto& cmd : *commands) {
    // A command may close the connection; stop there.
    auto again = conns_.find(id);
    if (again == conns_.end() || again->second.state == State::kClosing) return;
    HandleCommand(id, again->second, cmd);
  }
}

void Hub::OnOversizedFrame(ConnId id) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.state == State::kClosing) return;
  ++stats_.bad_frames;
  CloseConn(id, it->second, close_code::kMessageTooBig, "message too big");
}

void Hub::HandleCommand(ConnId id, Conn& conn, const v1::ClientCommand& cmd) {
  if (conn.state == State::kAwaitingConnect) {
    if (!cmd.has_connect() || cmd.id() == 0) {
      ++stats_.bad_frames;
      CloseConn(id, conn, close_code::kBadRequest, "bad request");
      return;
    }
    HandleConnect(id, conn, cmd);
    return;
  }
  if (cmd.id() == 0) {
    // An empty command is the pong to our ping; async sends are not served.
    conn.pong_deadline = absl::InfiniteFuture();
    Rearm(id, conn);
    return;
  }
  if (cmd.has_connect()) {
    ++stats_.bad_frames;
    CloseConn(id, conn, close_code::kBadRequest, "bad request");
    return;
  }
  if (cmd.has_ping()) {
    v1::ClientReply reply;
    reply.set_id(cmd.id());
    reply.mutable_ping();
    SendReply(id, conn, reply);
    return;
  }
  if (cmd.has_refresh()) {
    HandleRefresh(id, conn, cmd);
    return;
  }
  // Channels, RPC and presence are not part of this product (yet).
  SendError(id, conn, cmd.id(), error_code::kNotAvailable, "not available");
}

absl::Time Hub::ExpiredCloseAt(const Conn& conn) const {
  if (conn.expires_at == absl::InfiniteFuture()) return absl::InfiniteFuture();
  return conn.expires_at + absl::Seconds(config_.gateway().client_expired_close_delay_s());
}

void Hub::HandleRefresh(ConnId id, Conn& conn, const v1::ClientCommand& cmd) {
  // Centrifugo's refresh: a new token for the same user extends the session;
  // an expired one ends it as expired, anything else as an invalid token.
  if (cmd.refresh().token().empty()) {
    ++stats_.bad_frames;
    CloseConn(id, conn, close_code::kBadRequest, "bad request");
    return;
  }
  const v1::SessionRecord* record = index_.Find(conn.client_id);
  const v1::AppConfig* app = FindApp(config_, conn.app_id);
  if (record == nullptr || app == nullptr) {
    CloseConn(id, conn, close_code::kBadRequest, "bad request");
    return;
  }
  auto result = JwtVerifier::Verify(cmd.refresh().token(), PolicyOf(*app), clock_());
  if (!result.status.ok() || result.claims.sub != record->user_id()) {
    ++stats_.bad_tokens;
    if (result.error == TokenError::kExpired && !result.status.ok()) {
      CloseConn(id, conn, close_code::kExpired, "connection expired");
    } else {
      CloseConn(id, conn, close_code::kInvalidToken, "invalid token");
    }
    return;
  }
  ++stats_.refreshes;
  const absl::Time now = clock_();
  conn.expires_at = result.claims.expires_at;
  v1::ClientReply reply;
  reply.set_id(cmd.id());
  auto* r = reply.mutable_refresh();
  r->set_client(conn.client_id);
  r->set_version(kServerVersion);
  if (conn.expires_at != absl::InfiniteFuture()) {
    r->set_expires(true);
    r->set_ttl(TtlSeconds(conn.expires_at, now));
  }
  SendReply(id, conn, reply);
  Rearm(id, conn);
}

v1::SessionRecord Hub::NewRecord(const Conn& conn, const std::string& client_id, const std::string& app_id,
                                 const std::string& user_id) {
  v1::SessionRecord record;
  record.set_client_id(client_id);
  record.set_app_id(app_id);
  record.set_user_id(user_id);
  record.set_transport(TransportName(conn.meta.wire));
  record.set_protocol(ProtocolName(conn.meta.wire));
  record.set_connected_at_ms(absl::ToUnixMillis(clock_()));
  record.set_remote_addr(conn.meta.remote_addr);
  record.set_gateway_id(gateway_id_);
  return record;
}

void Hub::AddSession(ConnId id, Conn& conn, const v1::SessionRecord& in) {
  v1::SessionRecord record = in;
  for (std::string* field : {record.mutable_user_id(), record.mutable_app_name(), record.mutable_app_version(),
                             record.mutable_meta_json(), record.mutable_remote_addr()}) {
    *field = SafeUtf8(*field);
  }
  conn.client_id = record.client_id();
  conn.session = index_.Add(record, id);
  if (conn.session) observer_->OnSessionOpened(record);
  ++stats_.connects_ok;
}

void Hub::HandleConnect(ConnId id, Conn& conn, const v1::ClientCommand& cmd) {
  const std::string app_id = conn.meta.app_id.empty() ? config_.default_app() : conn.meta.app_id;
  const v1::AppConfig* app = FindApp(config_, app_id);
  if (app == nullptr) {
    ++stats_.bad_frames;
    CloseConn(id, conn, close_code::kBadRequest, "unknown app");
    return;
  }
  if (index_.size() >= config_.gateway().max_sessions()) {
    CloseConn(id, conn, close_code::kTryAgainLater, "gateway full");
    return;
  }
  const auto& req = cmd.connect();
  auto result = JwtVerifier::Verify(req.token(), PolicyOf(*app), clock_());
  if (!result.status.ok()) {
    ++stats_.bad_tokens;
    spdlog::debug("conn {}: token rejected: {}", id, std::string(result.status.message()));
    if (result.error != TokenError::kExpired) {
      CloseConn(id, conn, close_code::kInvalidToken, "invalid token");
    } else if (conn.meta.wire == Wire::kUniHttpStream) {
      // No reply channel to ask for a new token: the stream ends as expired
      // (a reconnect code), and the client comes back with a fresh token.
      CloseConn(id, conn, close_code::kExpired, "connection expired");
    } else {
      // As Centrifugo: a connect error, not a close. The SDKs answer it by
      // fetching a new token (getToken) and connecting again.
      SendError(id, conn, cmd.id(), error_code::kTokenExpired, "token expired");
    }
    return;
  }
  if (req.name().size() > kMaxIdLength || req.version().size() > kMaxIdLength ||
      result.claims.sub.size() > kMaxIdLength) {
    CloseConn(id, conn, close_code::kBadRequest, "bad request");
    return;
  }

  const absl::Time now = clock_();
  v1::SessionRecord record = NewRecord(conn, NewUuid(), app->id(), result.claims.sub);
  record.set_app_name(req.name());
  record.set_app_version(req.version());
  record.set_meta_json(result.claims.meta_json);
  conn.state = State::kConnected;
  conn.app_id = app->id();
  conn.connect_deadline = absl::InfiniteFuture();
  conn.next_ping = now + absl::Seconds(config_.gateway().ping_interval_s());
  conn.expires_at = result.claims.expires_at;
  AddSession(id, conn, record);

  const bool expires = conn.expires_at != absl::InfiniteFuture();
  const uint32_t ttl = TtlSeconds(conn.expires_at, now);
  if (conn.meta.wire == Wire::kUniHttpStream) {
    // No pong can come back on a one-way stream: pings only keep it alive.
    v1::ClientPush push;
    auto* c = push.mutable_connect();
    c->set_client(conn.client_id);
    c->set_version(kServerVersion);
    c->set_ping(config_.gateway().ping_interval_s());
    c->set_node(gateway_id_);
    if (expires) {
      c->set_expires(true);
      c->set_ttl(ttl);
    }
    SendPush(id, conn, push);
  } else {
    v1::ClientReply reply;
    reply.set_id(cmd.id());
    auto* r = reply.mutable_connect();
    r->set_client(conn.client_id);
    r->set_version(kServerVersion);
    r->set_ping(config_.gateway().ping_interval_s());
    r->set_pong(true);
    r->set_node(gateway_id_);
    if (expires) {
      r->set_expires(true);
      r->set_ttl(ttl);
    }
    SendReply(id, conn, reply);
  }
  Rearm(id, conn);
}

void Hub::SendReply(ConnId id, const Conn& conn, const v1::ClientReply& reply) {
  if (conn.meta.wire == Wire::kCentrifugeProtobuf) {
    transport_->Send(id, CentrifugeProtobufCodec::EncodeReply(reply), true);
  } else {
    transport_->Send(id, CentrifugeJsonCodec::EncodeReply(reply), false);
  }
}

void Hub::SendPush(ConnId id, const Conn& conn, const v1::ClientPush& push) {
  if (conn.meta.wire == Wire::kUniHttpStream) {
    // One JSON object per line, the push itself (not wrapped in a reply).
    std::string out;
    google::protobuf::util::JsonPrintOptions opts;
    opts.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(push, &out, opts);
    transport_->Send(id, out + "\n", false);
    return;
  }
  v1::ClientReply reply;
  *reply.mutable_push() = push;
  SendReply(id, conn, reply);
}

void Hub::SendError(ConnId id, const Conn& conn, uint32_t cmd_id, uint32_t code, const std::string& message) {
  v1::ClientReply reply;
  reply.set_id(cmd_id);
  reply.mutable_error()->set_code(code);
  reply.mutable_error()->set_message(message);
  SendReply(id, conn, reply);
}

void Hub::SendPing(ConnId id, const Conn& conn) {
  switch (conn.meta.wire) {
    case Wire::kCentrifugeProtobuf:
      transport_->Send(id, CentrifugeProtobufCodec::EncodePing(), true);
      break;
    case Wire::kUniHttpStream:
      transport_->Send(id, "{}\n", false);
      break;
    case Wire::kPusher:
      PusherSend(id, "pusher:ping", "{}");
      break;
    default:
      transport_->Send(id, CentrifugeJsonCodec::EncodePing(), false);
  }
}

void Hub::OnTimer(ConnId id) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.state == State::kClosing) return;
  Conn& conn = it->second;
  const absl::Time now = clock_();
  if (conn.state == State::kAwaitingConnect) {
    if (now >= conn.connect_deadline) {
      CloseConn(id, conn, close_code::kStale, "stale");
      return;
    }
  } else {
    if (now >= ExpiredCloseAt(conn)) {
      CloseConn(id, conn, close_code::kExpired, "connection expired");
      return;
    }
    if (now >= conn.pong_deadline) {
      CloseConn(id, conn, close_code::kNoPong, "no pong");
      return;
    }
    if (now >= conn.next_ping) {
      SendPing(id, conn);
      conn.next_ping = now + absl::Seconds(config_.gateway().ping_interval_s());
      if (conn.pong_deadline == absl::InfiniteFuture() && conn.meta.wire != Wire::kUniHttpStream) {
        conn.pong_deadline = now + absl::Seconds(config_.gateway().pong_timeout_s());
      }
    }
  }
  Rearm(id, conn);
}

void Hub::Rearm(ConnId id, const Conn& conn) {
  absl::Time next = conn.state == State::kAwaitingConnect
                        ? conn.connect_deadline
                        : std::min({conn.next_ping, conn.pong_deadline, ExpiredCloseAt(conn)});
  if (next == absl::InfiniteFuture()) return;
  absl::Duration after = std::max(next - clock_(), absl::Milliseconds(1));
  transport_->ArmTimer(id, after);
}

void Hub::CloseConn(ConnId id, Conn& conn, int code, const std::string& reason) {
  if (conn.session && index_.Remove(conn.client_id)) observer_->OnSessionClosed(conn.client_id);
  conn.session = false;
  conn.state = State::kClosing;
  switch (conn.meta.wire) {
    case Wire::kUniHttpStream: {
      // The stream's last line says why it ends.
      v1::ClientPush push;
      push.mutable_disconnect()->set_code(static_cast<uint32_t>(code));
      push.mutable_disconnect()->set_reason(reason);
      SendPush(id, conn, push);
      transport_->Close(id, code, reason);
      return;
    }
    case Wire::kPusher: {
      // Pusher clients read close codes in their own ranges: 4000-4099 do not
      // reconnect, 4200-4299 reconnect at once. Pusher-native codes pass
      // through; Centrifugo-style ones map by whether they mean "reconnect".
      int pusher_code = code;
      if (code == close_code::kNoPong) {
        pusher_code = 4201;  // Pusher's "pong reply not received"
      } else if (code >= 3000 && (code < 4000 || code >= 4300)) {
        const bool reconnect = code < 3500 || (code >= 4300 && code < 4500);
        pusher_code = reconnect ? 4200 : 4009;
      }
      if (pusher_code == 4009) PusherError(id, 4009, reason);
      transport_->Close(id, pusher_code, reason);
      return;
    }
    default:
      transport_->Close(id, code, reason);
  }
}

void Hub::OnClosed(ConnId id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  if (it->second.session && index_.Remove(it->second.client_id)) observer_->OnSessionClosed(it->second.client_id);
  conns_.erase(it);
}

size_t Hub::open_count() const {
  size_t n = 0;
  for (const auto& [id, conn] : conns_) n += conn.state != State::kClosing;
  return n;
}

size_t Hub::CloseAll(int code, const std::string& reason, size_t max) {
  size_t n = 0;
  for (auto& [id, conn] : conns_) {
    if (n >= max) break;
    if (conn.state == State::kClosing) continue;
    CloseConn(id, conn, code, reason);
    ++n;
  }
  return n;
}

v1::BusReply Hub::HandleBusRequest(const v1::BusRequest& req) {
  ++stats_.bus_requests;
  v1::BusReply reply;
  reply.set_format_version(kBusFormatVersion);
  reply.set_request_id(req.request_id());
  reply.set_gateway_id(gateway_id_);
  if (req.format_version() != kBusFormatVersion) {
    reply.set_error("unsupported format_version " + std::to_string(req.format_version()));
    return reply;
  }
  switch (req.op_case()) {
    case v1::BusRequest::kUserQuery: {
      for (const auto& client_id : index_.ClientsOf(req.user_query().app_id(), req.user_query().user_id())) {
        if (const auto* record = index_.Find(client_id)) *reply.add_sessions() = *record;
      }
      break;
    }
    case v1::BusRequest::kTerminate: {
      const auto& t = req.terminate();
      if (!ValidApiCloseCode(t.code())) {
        reply.set_error("invalid close code " + std::to_string(t.code()) + " (3000-4999, or 0 for the default)");
        break;
      }
      absl::flat_hash_set<std::string> keep(t.except_client_ids().begin(), t.except_client_ids().end());
      int code = t.code() ? static_cast<int>(t.code()) : close_code::kForceDisconnect;
      std::string reason = t.reason().empty() ? "force disconnect" : t.reason();
      uint32_t closed = 0;
      for (const auto& client_id : index_.ClientsOf(t.app_id(), t.user_id())) {
        if (keep.contains(client_id)) continue;
        if (!t.only_client_id().empty() && client_id != t.only_client_id()) continue;
        auto cit = conns_.find(index_.ConnOf(client_id));
        if (cit == conns_.end()) continue;
        CloseConn(cit->first, cit->second, code, reason);
        ++closed;
      }
      reply.set_closed(closed);
      break;
    }
    case v1::BusRequest::kDisconnect: {
      const auto& d = req.disconnect();
      if (!ValidApiCloseCode(d.code())) {
        reply.set_error("invalid close code " + std::to_string(d.code()) + " (3000-4999, or 0 for the default)");
        break;
      }
      const auto* record = index_.Find(d.client_id());
      if (record != nullptr && record->app_id() == d.app_id()) {
        auto cit = conns_.find(index_.ConnOf(d.client_id()));
        if (cit != conns_.end()) {
          CloseConn(cit->first, cit->second, d.code() ? static_cast<int>(d.code()) : close_code::kForceDisconnect,
                    d.reason().empty() ? "force disconnect" : d.reason());
          reply.set_closed(1);
        }
      }
      break;
    }
    default:
      reply.set_error("unknown operation");
  }
  return reply;
}

}  // namespace switchboard::gateway
