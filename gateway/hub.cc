#include "gateway/hub.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "common/config.h"
#include "common/ids.h"
#include "gateway/centrifuge_codec.h"
#include "gateway/jwt_verifier.h"
#include "spdlog/spdlog.h"

namespace switchboard::gateway {
namespace {

constexpr uint32_t kBusFormatVersion = 1;
constexpr size_t kMaxIdLength = 256;
constexpr char kServerVersion[] = "switchboard 0.1.0";

}  // namespace

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
  conn.connect_deadline = clock_() + absl::Milliseconds(config_.gateway().connect_timeout_ms());
  auto [it, inserted] = conns_.emplace(id, std::move(conn));
  if (!inserted) return;
  Rearm(id, it->second);
}

void Hub::OnFrame(ConnId id, std::string_view data, bool binary) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.state == State::kClosing) return;
  Conn& conn = it->second;
  if (binary) {
    ++stats_.bad_frames;
    CloseConn(id, conn, close_code::kBadRequest, "bad request");
    return;
  }
  auto commands = CentrifugeJsonCodec::DecodeCommands(data);
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
    SendReply(id, reply);
    return;
  }
  if (cmd.has_refresh()) {
    const v1::SessionRecord* record = index_.Find(conn.client_id);
    const v1::AppConfig* app = FindApp(config_, record ? record->app_id() : "");
    auto result = JwtVerifier::Verify(cmd.refresh().token(), app ? app->secret() : "", clock_());
    if (!result.status.ok() || record == nullptr || result.claims.sub != record->user_id()) {
      ++stats_.bad_tokens;
      CloseConn(id, conn, close_code::kInvalidToken, "invalid token");
      return;
    }
    conn.expires_at = result.claims.exp ? absl::FromUnixSeconds(result.claims.exp) : absl::InfiniteFuture();
    v1::ClientReply reply;
    reply.set_id(cmd.id());
    auto* r = reply.mutable_refresh();
    r->set_client(conn.client_id);
    r->set_version(kServerVersion);
    if (result.claims.exp) {
      r->set_expires(true);
      r->set_ttl(static_cast<uint32_t>(std::max<int64_t>(0, result.claims.exp - absl::ToUnixSeconds(clock_()))));
    }
    SendReply(id, reply);
    Rearm(id, conn);
    return;
  }
  // Channels, RPC and presence are not part of this product (yet).
  SendError(id, cmd.id(), error_code::kNotAvailable, "not available");
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
  auto result = JwtVerifier::Verify(req.token(), app->secret(), clock_());
  if (!result.status.ok()) {
    ++stats_.bad_tokens;
    spdlog::debug("conn {}: token rejected: {}", id, std::string(result.status.message()));
    if (result.error == TokenError::kExpired) {
      CloseConn(id, conn, close_code::kExpired, "token expired");
    } else {
      CloseConn(id, conn, close_code::kInvalidToken, "invalid token");
    }
    return;
  }
  if (req.name().size() > kMaxIdLength || req.version().size() > kMaxIdLength ||
      result.claims.sub.size() > kMaxIdLength) {
    CloseConn(id, conn, close_code::kBadRequest, "bad request");
    return;
  }

  const absl::Time now = clock_();
  v1::SessionRecord record;
  record.set_client_id(NewUuid());
  record.set_app_id(app->id());
  record.set_user_id(result.claims.sub);
  record.set_app_name(req.name());
  record.set_app_version(req.version());
  record.set_transport(conn.meta.transport);
  record.set_protocol(conn.meta.protocol);
  record.set_meta_json(result.claims.meta_json);
  record.set_connected_at_ms(absl::ToUnixMillis(now));
  record.set_remote_addr(conn.meta.remote_addr);
  record.set_gateway_id(gateway_id_);
  conn.client_id = record.client_id();
  conn.state = State::kConnected;
  conn.next_ping = now + absl::Seconds(config_.gateway().ping_interval_s());
  if (result.claims.exp) conn.expires_at = absl::FromUnixSeconds(result.claims.exp);
  index_.Add(record, id);
  observer_->OnSessionOpened(record);
  ++stats_.connects_ok;

  v1::ClientReply reply;
  reply.set_id(cmd.id());
  auto* r = reply.mutable_connect();
  r->set_client(conn.client_id);
  r->set_version(kServerVersion);
  r->set_ping(config_.gateway().ping_interval_s());
  r->set_pong(true);
  r->set_node(gateway_id_);
  if (result.claims.exp) {
    r->set_expires(true);
    r->set_ttl(static_cast<uint32_t>(std::max<int64_t>(0, result.claims.exp - absl::ToUnixSeconds(now))));
  }
  SendReply(id, reply);
  Rearm(id, conn);
}

void Hub::SendReply(ConnId id, const v1::ClientReply& reply) {
  transport_->Send(id, CentrifugeJsonCodec::EncodeReply(reply), false);
}

void Hub::SendError(ConnId id, uint32_t cmd_id, uint32_t code, const std::string& message) {
  v1::ClientReply reply;
  reply.set_id(cmd_id);
  reply.mutable_error()->set_code(code);
  reply.mutable_error()->set_message(message);
  SendReply(id, reply);
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
    if (now >= conn.expires_at) {
      CloseConn(id, conn, close_code::kExpired, "token expired");
      return;
    }
    if (now >= conn.pong_deadline) {
      CloseConn(id, conn, close_code::kNoPong, "no pong");
      return;
    }
    if (now >= conn.next_ping) {
      transport_->Send(id, CentrifugeJsonCodec::EncodePing(), false);
      conn.next_ping = now + absl::Seconds(config_.gateway().ping_interval_s());
      if (conn.pong_deadline == absl::InfiniteFuture()) {
        conn.pong_deadline = now + absl::Seconds(config_.gateway().pong_timeout_s());
      }
    }
  }
  Rearm(id, conn);
}

void Hub::Rearm(ConnId id, const Conn& conn) {
  absl::Time next = conn.state == State::kAwaitingConnect
                        ? conn.connect_deadline
                        : std::min({conn.next_ping, conn.pong_deadline, conn.expires_at});
  absl::Duration after = std::max(next - clock_(), absl::Milliseconds(1));
  transport_->ArmTimer(id, after);
}

void Hub::CloseConn(ConnId id, Conn& conn, int code, const std::string& reason) {
  if (!conn.client_id.empty() && index_.Remove(conn.client_id)) {
    observer_->OnSessionClosed(conn.client_id);
  }
  conn.state = State::kClosing;
  transport_->Close(id, code, reason);
}

void Hub::OnClosed(ConnId id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  if (!it->second.client_id.empty() && index_.Remove(it->second.client_id)) {
    observer_->OnSessionClosed(it->second.client_id);
  }
  conns_.erase(it);
}

size_t Hub::CloseAll(int code, const std::string& reason) {
  size_t n = 0;
  for (auto& [id, conn] : conns_) {
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
