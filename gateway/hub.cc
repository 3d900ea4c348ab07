#include "gateway/hub.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "gateway/centrifuge_codec.h"
#include "spdlog/spdlog.h"

namespace switchboard::gateway {
namespace {


// Close codes a terminate or disconnect may ask for: the application range of
// RFC 6455 (3000-4999), or 0 for the default. Control checks the same at its
// API; a gateway does not trust the bus to have done so.
bool ValidApiCloseCode(uint32_t code) { return code == 0 || (code >= 3000 && code <= 4999); }

// A timer this late means the loop fell behind (the wheel itself fires within
// a tick).
constexpr absl::Duration kLateLoop = absl::Milliseconds(500);

}  // namespace

// The hub as one connection's protocol sees it.
class Hub::Host final : public ConnectionHost {
 public:
  Host(Hub* hub, ConnId id, Conn* conn) : hub_(hub), id_(id), conn_(conn) {}

  const v1::Config& config() const override { return hub_->config_; }
  const std::string& gateway_id() const override { return hub_->gateway_id_; }
  absl::Time Now() const override { return hub_->clock_(); }
  const ConnectionMeta& meta() const override {
    static const ConnectionMeta kNone;
    return conn_->meta ? *conn_->meta : kNone;
  }
  HubStats& stats() override { return hub_->stats_; }

  bool Send(std::string frame, bool binary) override { return hub_->transport_->Send(id_, std::move(frame), binary); }
  void Close(int code, const std::string& reason) override {
    if (conn_->state != State::kClosing) hub_->CloseConn(id_, *conn_, code, reason);
  }
  bool closing() const override { return conn_->state == State::kClosing; }
  bool has_session() const override { return conn_->session; }

  bool Accept(absl::Time auth_by) override {
    if (conn_->state != State::kAwaitingConnect) return true;
    if (auth_by != absl::InfiniteFuture()) {
      if (hub_->awaiting_auth_ >= hub_->config_.gateway().max_unsigned()) return false;
      ++hub_->awaiting_auth_;
      conn_->awaiting_auth = true;
    }
    conn_->state = State::kOpen;
    conn_->start_deadline = auth_by;  // the connect deadline is met
    conn_->next_ping = hub_->PingAt(Now(), FirstPingAfter(id_, absl::Seconds(hub_->config_.gateway().ping_interval_s())));
    return true;
  }
  bool HasRoom() const override { return hub_->index_.size() < hub_->config_.gateway().max_sessions(); }
  v1::SessionRecord NewRecord(const std::string& client_id, const std::string& app_id,
                              const std::string& user_id) const override {
    v1::SessionRecord record;
    record.set_client_id(client_id);
    record.set_app_id(app_id);
    record.set_user_id(user_id);
    record.set_transport(conn_->protocol->transport());
    record.set_protocol(conn_->protocol->protocol());
    record.set_connected_at_ms(absl::ToUnixMillis(Now()));
    record.set_remote_addr(meta().remote_addr);
    record.set_gateway_id(hub_->gateway_id_);
    return record;
  }
  bool StartSession(v1::SessionRecord record, absl::Time expires_at) override {
    if (conn_->session || conn_->state == State::kClosing) return false;
    for (std::string* field : {record.mutable_user_id(), record.mutable_app_name(), record.mutable_app_version(),
                               record.mutable_meta_json(), record.mutable_remote_addr()}) {
      *field = SafeUtf8(*field);
    }
    const std::string* client_id = hub_->index_.Add(record, id_);
    if (client_id == nullptr) return false;
    conn_->client_id = client_id;
    conn_->session = true;
    hub_->observer_->OnSessionOpened(record);
    ++hub_->stats_.connects_ok;
    hub_->PublishCounts();
    Accept(absl::InfiniteFuture());
    hub_->ClearAuthDeadline(*conn_);
    conn_->expires_at = expires_at;
    conn_->meta.reset();  // the record has what is kept
    return true;
  }
  void ExtendSession(absl::Time expires_at) override { conn_->expires_at = expires_at; }
  std::optional<v1::SessionRecord> session() const override {
    return conn_->session ? hub_->index_.Find(*conn_->client_id) : std::nullopt;
  }
  void Activity(bool reset_ping) override {
    conn_->pong_deadline = absl::InfiniteFuture();
    conn_->ping_in_flight = false;
    if (reset_ping && conn_->state == State::kOpen) {
      conn_->next_ping = hub_->PingAt(Now(), absl::Seconds(hub_->config_.gateway().ping_interval_s()));
    }
  }

 private:
  Hub* hub_;
  ConnId id_;
  Conn* conn_;
};

Hub::Hub(const v1::Config& config, std::string gateway_id, Transport* transport,
         SessionObserver* observer, Clock clock)
    : config_(config),
      gateway_id_(std::move(gateway_id)),
      transport_(transport),
      observer_(observer),
      clock_(std::move(clock)),
      ping_phase_(absl::Milliseconds(std::hash<std::string>()(gateway_id_) % absl::ToInt64Milliseconds(kPingSlot))) {
  static_assert(sizeof(Conn) <= 64, "one Conn per connection: keep it small");
}

Hub::~Hub() = default;

void Hub::OnOpen(ConnId id, ConnectionMeta meta) {
  Conn fresh;
  fresh.protocol = MakeClientProtocol(meta.wire);
  fresh.meta = std::make_unique<ConnectionMeta>(std::move(meta));
  auto [it, inserted] = conns_.emplace(id, std::move(fresh));
  if (!inserted) return;
  Conn& conn = it->second;
  PublishCounts();
  conn.start_deadline = clock_() + absl::Milliseconds(config_.gateway().connect_timeout_ms());
  Host host(this, id, &conn);
  conn.protocol->OnOpen(host);
  if (conn.state != State::kClosing) Rearm(id, conn);
}

void Hub::OnFrame(ConnId id, std::string_view data, bool binary) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.state == State::kClosing) return;
  Conn& conn = it->second;
  Host host(this, id, &conn);
  conn.protocol->OnFrame(host, data, binary);
  if (conn.state != State::kClosing) Rearm(id, conn);
}

void Hub::OnOversizedFrame(ConnId id) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.state == State::kClosing) return;
  ++stats_.bad_frames;
  CloseConn(id, it->second, close_code::kMessageTooBig, "message too big");
}

void Hub::OnTimer(ConnId id) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second.state == State::kClosing) return;
  Conn& conn = it->second;
  const absl::Time now = clock_();
  if (conn.state == State::kAwaitingConnect) {
    if (now >= conn.start_deadline) {
      CloseConn(id, conn, close_code::kStale, "stale");
      return;
    }
  } else {
    if (conn.awaiting_auth && now >= conn.start_deadline) {
      CloseConn(id, conn, close_code::kStale, "not authenticated in time");
      return;
    }
    if (now >= ExpiredCloseAt(conn)) {
      CloseConn(id, conn, close_code::kExpired, "connection expired");
      return;
    }
    if (now >= conn.pong_deadline) {
      if (now - conn.pong_deadline > kLateLoop) {
        // This timer fires long after its deadline: the loop itself is late,
        // and the pong may be sitting unread behind it. A healthy client must
        // never pay for our lateness: look again once pending reads are in.
        ++stats_.late_pong_checks;
        conn.pong_deadline = now + kLateLoop;
        Rearm(id, conn);
        return;
      }
      CloseConn(id, conn, close_code::kNoPong, "no pong");
      return;
    }
    if (now >= conn.next_ping) {
      Host host(this, id, &conn);
      conn.protocol->SendPing(host);
      conn.next_ping = PingAt(now, absl::Seconds(config_.gateway().ping_interval_s()));
      if (conn.pong_deadline == absl::InfiniteFuture() && conn.protocol->ExpectsPong()) {
        // Provisional: counted again from the moment the ping is written, so
        // a loop or socket that is slow to send cannot eat the client's time.
        conn.pong_deadline = now + absl::Seconds(config_.gateway().pong_timeout_s());
        conn.ping_in_flight = true;
        transport_->NotifyWhenWritten(id);
      }
    }
  }
  Rearm(id, conn);
}

void Hub::OnWritten(ConnId id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& conn = it->second;
  if (!conn.ping_in_flight) return;
  conn.ping_in_flight = false;
  if (conn.pong_deadline == absl::InfiniteFuture() || conn.state == State::kClosing) return;  // pong already in
  const absl::Time from_write = clock_() + absl::Seconds(config_.gateway().pong_timeout_s());
  if (from_write > conn.pong_deadline) {
    conn.pong_deadline = from_write;
    Rearm(id, conn);
  }
}

absl::Time Hub::ExpiredCloseAt(const Conn& conn) const {
  if (conn.expires_at == absl::InfiniteFuture()) return absl::InfiniteFuture();
  return conn.expires_at + absl::Seconds(config_.gateway().client_expired_close_delay_s());
}

void Hub::Rearm(ConnId id, const Conn& conn) {
  absl::Time next = conn.state == State::kAwaitingConnect
                        ? absl::Time(conn.start_deadline)
                        : std::min<absl::Time>({conn.next_ping, conn.pong_deadline, ExpiredCloseAt(conn),
                                                conn.start_deadline});
  if (next == absl::InfiniteFuture()) return;
  absl::Duration after = std::max(next - clock_(), absl::Milliseconds(1));
  transport_->ArmTimer(id, after);
}

void Hub::ClearAuthDeadline(Conn& conn) {
  if (!conn.awaiting_auth) return;
  conn.awaiting_auth = false;
  conn.start_deadline = absl::InfiniteFuture();
  --awaiting_auth_;
}

void Hub::EndSession(Conn& conn) {
  if (!conn.session) return;
  // A copy: the index frees its own as it removes the session.
  const std::string client_id = *conn.client_id;
  conn.session = false;
  conn.client_id = nullptr;
  if (index_.Remove(client_id)) observer_->OnSessionClosed(client_id);
}

void Hub::CloseConn(ConnId id, Conn& conn, int code, const std::string& reason) {
  ClearAuthDeadline(conn);
  EndSession(conn);
  conn.state = State::kClosing;
  PublishCounts();
  Host host(this, id, &conn);
  const int wire_code = conn.protocol->OnClose(host, code, reason);
  transport_->Close(id, wire_code, reason);
}

void Hub::OnClosed(ConnId id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  ClearAuthDeadline(it->second);
  EndSession(it->second);
  conns_.erase(it);
  PublishCounts();
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

absl::Time PingSlot(absl::Time t, absl::Duration phase) {
  // Pings are due on 250 ms boundaries (shifted by `phase`): one loop
  // wake-up sends a batch and the pongs come back together, instead of a
  // wake-up per connection (idle CPU at 19k sessions: BENCHMARKS.md). Each
  // gateway process has its own phase, so the processes on one host do not
  // all ping at the same instants.
  const int64_t kSlotMs = absl::ToInt64Milliseconds(kPingSlot);
  const int64_t p = absl::ToInt64Milliseconds(phase) % kSlotMs;
  const int64_t ms = absl::ToUnixMillis(t) - p;
  return absl::FromUnixMillis((ms + kSlotMs - 1) / kSlotMs * kSlotMs + p);
}

absl::Time Hub::PingAt(absl::Time now, absl::Duration after) const {
  // The slot at or before now + after (never later than the interval the
  // client was told), and never sooner than one slot from now.
  return PingSlot(now + std::max(after - kPingSlot, kPingSlot), ping_phase_);
}

absl::Duration FirstPingAfter(ConnId id, absl::Duration interval) {
  // Between half the interval and the whole of it, spread by the connection
  // ID: clients that connect in a burst (a gateway restart, a mass
  // reconnect) must not be pinged in a burst every interval forever after.
  // Never later than the interval the client was told.
  const uint64_t spread = (id * 0x9E3779B97F4A7C15ull) >> 54;  // 0..1023
  return interval / 2 + interval / 2 * (static_cast<double>(spread) / 1024.0);
}

bool Hub::StartReply(const v1::BusRequest& req, v1::BusReply* reply) const {
  bus_requests_.fetch_add(1, std::memory_order_relaxed);
  reply->set_format_version(bus_format_version_);
  reply->set_request_id(req.request_id());
  reply->set_gateway_id(gateway_id_);
  if (req.format_version() != bus_format_version_) {
    reply->set_error("unsupported format_version " + std::to_string(req.format_version()));
    return false;
  }
  return true;
}

v1::BusReply Hub::AnswerQuery(const v1::BusRequest& req) const {
  v1::BusReply reply;
  if (!StartReply(req, &reply)) return reply;
  if (!IsQuery(req)) {
    reply.set_error("not a query");
    return reply;
  }
  const auto& q = req.user_query();
  auto sessions = index_.SessionsOf(q.app_id(), q.user_id());
  if (!q.after_client_id().empty() || q.limit() > 0) {
    // A page: those after the cursor, the first `limit` in client ID order.
    sessions.erase(std::remove_if(sessions.begin(), sessions.end(),
                                  [&q](const v1::SessionRecord& r) { return r.client_id() <= q.after_client_id(); }),
                   sessions.end());
    auto by_id = [](const v1::SessionRecord& a, const v1::SessionRecord& b) { return a.client_id() < b.client_id(); };
    if (q.limit() > 0 && sessions.size() > q.limit()) {
      std::nth_element(sessions.begin(), sessions.begin() + q.limit(), sessions.end(), by_id);
      sessions.resize(q.limit());
    }
    std::sort(sessions.begin(), sessions.end(), by_id);
  }
  reply.mutable_sessions()->Reserve(static_cast<int>(sessions.size()));
  for (auto& record : sessions) *reply.add_sessions() = std::move(record);
  return reply;
}

namespace {
const google::protobuf::RepeatedPtrField<std::string>& NoClients() {
  static const auto* none = new google::protobuf::RepeatedPtrField<std::string>();
  return *none;
}
const std::string& NoId() {
  static const auto* none = new std::string();
  return *none;
}
}  // namespace

Hub::TargetQuery Hub::QueryOf(const v1::BusTerminate& t) {
  // A terminate names its user: `only` is one of theirs, or nothing.
  return {t.app_id(), t.user_id(), t.user_id().empty() ? NoId() : t.only_client_id(), t.except_client_ids()};
}

Hub::TargetQuery Hub::QueryOf(const v1::BusDisconnect& d) {
  // One client, whoever its user; no client ID names no session.
  return {d.app_id(), NoId(), d.client_id(), NoClients(), d.client_id().empty()};
}

Hub::TargetQuery Hub::QueryOf(const v1::BusSend& m) {
  // One client (whoever its user), or a user's sessions.
  return {m.app_id(), m.only_client_id().empty() ? m.user_id() : NoId(), m.only_client_id(), m.except_client_ids()};
}

void Hub::ForEachTarget(const TargetQuery& q,
                        absl::FunctionRef<bool(const std::string& client_id, const std::string& user_id)> visit) const {
  if (q.none) return;
  // A long keep-list goes into a set (a user with many sessions and many
  // exceptions); a short one is scanned.
  absl::flat_hash_set<absl::string_view> skip;
  if (q.except.size() > 8) skip.insert(q.except.begin(), q.except.end());
  auto skipped = [&q, &skip](const std::string& client_id) {
    return skip.empty() ? std::find(q.except.begin(), q.except.end(), client_id) != q.except.end()
                        : skip.contains(client_id);
  };
  if (!q.only.empty()) {
    const auto owner = index_.OwnerOf(q.only);
    if (owner.has_value() && owner->app_id == q.app_id && (q.user_id.empty() || owner->user_id == q.user_id) &&
        !skipped(q.only)) {
      (void)visit(q.only, owner->user_id);
    }
    return;
  }
  index_.VisitClientsOf(q.app_id, q.user_id,
                        [&](const std::string& client_id) { return skipped(client_id) || visit(client_id, q.user_id); });
}

std::vector<Hub::Target> Hub::TargetsOf(const TargetQuery& q) const {
  std::vector<Target> out;
  ForEachTarget(q, [&out](const std::string& client_id, const std::string& user_id) {
    out.push_back({client_id, user_id});
    return true;
  });
  return out;
}

bool Hub::HasTargets(const TargetQuery& q) const {
  bool any = false;
  ForEachTarget(q, [&any](const std::string&, const std::string&) {
    any = true;
    return false;
  });
  return any;
}

std::optional<v1::BusReply> Hub::AnswerIfNothingToDo(const v1::BusRequest& req) const {
  if (req.format_version() != bus_format_version_) return std::nullopt;
  // The same targets the loop would act on (TargetsOf): none, and the
  // answer is the loop's own (closed 0, delivered 0).
  switch (req.op_case()) {
    case v1::BusRequest::kTerminate: {
      const auto& t = req.terminate();
      if (!ValidApiCloseCode(t.code())) return std::nullopt;  // the loop says why
      if (HasTargets(QueryOf(t))) return std::nullopt;
      break;
    }
    case v1::BusRequest::kDisconnect: {
      const auto& d = req.disconnect();
      if (!ValidApiCloseCode(d.code())) return std::nullopt;
      if (HasTargets(QueryOf(d))) return std::nullopt;
      break;
    }
    case v1::BusRequest::kSend: {
      const auto& m = req.send();
      if (HasTargets(QueryOf(m))) return std::nullopt;
      break;
    }
    default:
      return std::nullopt;
  }
  v1::BusReply reply;
  (void)StartReply(req, &reply);
  return reply;
}

v1::BusReply Hub::HandleBusRequest(const v1::BusRequest& req) {
  if (IsQuery(req)) return AnswerQuery(req);
  v1::BusReply reply;
  if (!StartReply(req, &reply)) return reply;
  auto conn_of = [this](const std::string& client_id) { return conns_.find(index_.ConnOf(client_id)); };
  switch (req.op_case()) {
    case v1::BusRequest::kTerminate: {
      const auto& t = req.terminate();
      if (!ValidApiCloseCode(t.code())) {
        reply.set_error("invalid close code " + std::to_string(t.code()) + " (3000-4999, or 0 for the default)");
        break;
      }
      const int code = t.code() ? static_cast<int>(t.code()) : close_code::kForceDisconnect;
      const std::string reason = t.reason().empty() ? "force disconnect" : t.reason();
      uint32_t closed = 0;
      for (const auto& target : TargetsOf(QueryOf(t))) {
        auto cit = conn_of(target.client_id);
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
      for (const auto& target : TargetsOf(QueryOf(d))) {
        auto cit = conn_of(target.client_id);
        if (cit == conns_.end()) continue;
        CloseConn(cit->first, cit->second, d.code() ? static_cast<int>(d.code()) : close_code::kForceDisconnect,
                  d.reason().empty() ? "force disconnect" : d.reason());
        reply.set_closed(1);
      }
      break;
    }
    case v1::BusRequest::kSend: {
      const auto& m = req.send();
      uint32_t delivered = 0;
      auto* not_delivered = reply.mutable_not_delivered();
      const std::vector<Target> targets = TargetsOf(QueryOf(m));
      // Every target has the same user (one client, or the user's
      // sessions): each wire's frame is made once.
      EncodedFrames encoded;
      for (const auto& target : targets) {
        auto cit = conn_of(target.client_id);
        // Listed but without its connection: it is ending (the index learns
        // last). Counted as such, never skipped silently.
        if (cit == conns_.end() || cit->second.state == State::kClosing) {
          ++(*not_delivered)["closing"];
          continue;
        }
        Conn& conn = cit->second;
        Host host(this, cit->first, &conn);
        const ServerMessage message{m.app_id(), target.user_id, m.event(), m.data_json(), m.pusher_text_verbatim(),
                                    &encoded};
        switch (conn.protocol->Deliver(host, message)) {
          case DeliverResult::kDelivered: ++delivered; break;
          case DeliverResult::kNotSubscribed: ++(*not_delivered)["not subscribed"]; break;
          case DeliverResult::kSlow:
            // The socket layer is closing it (outbox full, or the socket is
            // gone): the session ends now, not when the close is written.
            ++(*not_delivered)["slow consumer"];
            if (conn.state != State::kClosing) CloseConn(cit->first, conn, close_code::kSlow, "slow");
            break;
        }
      }
      reply.set_delivered(delivered);
      break;
    }
    default:
      reply.set_error("unknown operation");
  }
  return reply;
}

}  // namespace switchboard::gateway
