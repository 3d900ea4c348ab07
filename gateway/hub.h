#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/time/time.h"
#include "gateway/client_protocol.h"
#include "gateway/session_index.h"
#include "gateway/transport.h"
#include "switchboard/v1/bus.pb.h"
#include "switchboard/v1/config.pb.h"

namespace switchboard::gateway {

// An absl::Time in 8 bytes instead of 16 (microseconds since the epoch;
// InfiniteFuture stays InfiniteFuture): five per connection add up.
class PackedTime {
 public:
  PackedTime(absl::Time t = absl::InfiniteFuture())  // NOLINT: converts like the time it holds
      : us_(t == absl::InfiniteFuture() ? kInfinite : absl::ToUnixMicros(t)) {}
  operator absl::Time() const {  // NOLINT
    return us_ == kInfinite ? absl::InfiniteFuture() : absl::FromUnixMicros(us_);
  }

 private:
  static constexpr int64_t kInfinite = INT64_MAX;
  int64_t us_;
};

// When a new connection gets its first ping: within [interval / 2, interval),
// spread over connections (later pings come every interval).
absl::Duration FirstPingAfter(ConnId id, absl::Duration interval);
// Pings are due on slots of this length (they go out in batches).
inline constexpr absl::Duration kPingSlot = absl::Milliseconds(250);
// Rounds a ping time up to its slot, slots starting at `phase` past each
// multiple of kPingSlot.
absl::Time PingSlot(absl::Time t, absl::Duration phase = absl::ZeroDuration());

// The gateway's connections and sessions: each connection's life (connect
// deadline, server pings and pong deadlines, token expiry with its grace,
// close), the session index, and the answers to the control service's bus
// requests. What a client says and hears is its ClientProtocol's business
// (client_protocol.h); the hub knows no wire format. Knows nothing of lws,
// NATS or gRPC. Loop thread only.
class Hub {
 public:
  using Clock = std::function<absl::Time()>;
  Hub(const v1::Config& config, std::string gateway_id, Transport* transport,
      SessionObserver* observer, Clock clock = absl::Now);
  ~Hub();

  void OnOpen(ConnId conn, ConnectionMeta meta);
  void OnFrame(ConnId conn, std::string_view data, bool binary);
  void OnTimer(ConnId conn);
  // Everything queued for `conn` up to a NotifyWhenWritten() is on the wire.
  void OnWritten(ConnId conn);
  void OnClosed(ConnId conn);
  // The socket layer refused the frame for its size.
  void OnOversizedFrame(ConnId conn);

  v1::BusReply HandleBusRequest(const v1::BusRequest& request);
  // A request that only reads (a user's sessions) can be answered on the
  // thread it arrived on, without a trip through the loop: AnswerQuery().
  static bool IsQuery(const v1::BusRequest& request) { return request.op_case() == v1::BusRequest::kUserQuery; }
  // Any thread; only for IsQuery() requests.
  v1::BusReply AnswerQuery(const v1::BusRequest& request) const;
  // Any thread: the answer to a command (terminate, disconnect, send) that
  // finds no session of this gateway to act on, from the session index
  // alone, so that gateways without the user's sessions (most of a fleet)
  // answer as fast as a query does; nullopt when the loop must handle it
  // (sessions to act on, or an error to give).
  std::optional<v1::BusReply> AnswerIfNothingToDo(const v1::BusRequest& request) const;
  // The bus payloads' format this gateway speaks (bus.proto).
  static constexpr uint32_t kBusFormatVersion = 1;
  // Testing only: the bus format version this gateway speaks (1 by
  // default), so a test can run a gateway of another version. Before
  // the bus handler starts.
  void set_bus_format_version(uint32_t v) { bus_format_version_ = v; }
  uint64_t bus_requests() const { return bus_requests_.load(std::memory_order_relaxed); }

  // Closes up to `max` open connections with `code` (e.g. shutdown); returns
  // how many it closed.
  size_t CloseAll(int code, const std::string& reason, size_t max = SIZE_MAX);

  std::vector<v1::SessionRecord> Snapshot() const { return index_.All(); }
  size_t connection_count() const { return conns_.size(); }
  // Connections not yet told to close.
  size_t open_count() const;
  size_t session_count() const { return index_.size(); }
  // Any thread: the counts as of the last change, for heartbeats.
  uint32_t sessions_now() const { return sessions_now_.load(std::memory_order_relaxed); }
  uint32_t connections_now() const { return connections_now_.load(std::memory_order_relaxed); }
  const HubStats& stats() const { return stats_; }
  // Sessions by app, transport and protocol. Any thread.
  std::vector<SessionIndex::KindCount> SessionKinds() const { return index_.CountsByKind(); }

 private:
  enum class State : uint8_t { kAwaitingConnect, kOpen, kClosing };
  // 64 bytes (the small fields together at the end): one per connection.
  struct Conn {
    // What the upgrade request said; needed until the session starts, then
    // dropped (idle sessions are most of the memory).
    std::unique_ptr<ConnectionMeta> meta;
    ProtocolPtr protocol;  // shared by all for Centrifugo's protocols
    // Once a session: the session index's own copy of the client ID (its
    // node map keeps keys in place); nullptr otherwise.
    const std::string* client_id = nullptr;
    // kAwaitingConnect: connect by then. Open: for a connection accepted
    // without a session (Pusher before signin, `awaiting_auth`), sign in by
    // then; InfiniteFuture otherwise. One field: never both at once.
    PackedTime start_deadline;
    PackedTime next_ping;
    PackedTime pong_deadline;
    PackedTime expires_at;  // the token's exp; closed a grace period later
    State state = State::kAwaitingConnect;
    bool session = false;         // in the session index
    bool ping_in_flight = false;  // the last ping is queued, not yet written
    bool awaiting_auth = false;   // counted in awaiting_auth_
  };
  class Host;

  // The sessions a command acts on, from the index alone: the app's
  // sessions of `user_id`, or the one client `only` (of that user when
  // `user_id` is set), less `except`; each with its user ID. The loop acts
  // on them, and the bus thread answers at once when there are none: one
  // definition for both (ForEachTarget). Any thread.
  struct Target {
    std::string client_id, user_id;
  };
  struct TargetQuery {
    const std::string& app_id;
    const std::string& user_id;
    const std::string& only;
    const google::protobuf::RepeatedPtrField<std::string>& except;
    bool none = false;  // names no session (a disconnect without a client ID)
  };
  // The query holds references into the command: it lives no longer.
  static TargetQuery QueryOf(const v1::BusTerminate& t);
  static TargetQuery QueryOf(const v1::BusDisconnect& d);
  static TargetQuery QueryOf(const v1::BusSend& m);
  // Visits the targets until `visit` returns false (it runs under the
  // index's shared lock: it must not change the index).
  void ForEachTarget(const TargetQuery& q,
                     absl::FunctionRef<bool(const std::string& client_id, const std::string& user_id)> visit) const;
  std::vector<Target> TargetsOf(const TargetQuery& q) const;
  bool HasTargets(const TargetQuery& q) const;  // stops at the first
  // Counts the request and fills the reply's header; false (with the error
  // set) for a format this gateway does not speak. Any thread.
  bool StartReply(const v1::BusRequest& req, v1::BusReply* reply) const;
  // Takes the connection's session out of the index, if it has one.
  void EndSession(Conn& conn);
  // Drops the session (if any), lets the protocol tell the client, and asks
  // the transport to close with the protocol's code.
  void CloseConn(ConnId id, Conn& conn, int code, const std::string& reason);
  void Rearm(ConnId id, const Conn& conn);
  void ClearAuthDeadline(Conn& conn);
  // When an expired connection is closed: its token's exp plus the grace.
  absl::Time ExpiredCloseAt(const Conn& conn) const;

  const v1::Config& config_;
  std::string gateway_id_;
  Transport* transport_;
  SessionObserver* observer_;
  Clock clock_;
  SessionIndex index_;
  // Node map: one exact-size allocation per connection (a flat map would
  // keep up to twice the slots, each the size of a Conn).
  absl::node_hash_map<ConnId, Conn> conns_;
  HubStats stats_;
  size_t awaiting_auth_ = 0;  // open connections with an auth deadline (Pusher before signin)
  void PublishCounts() {
    sessions_now_.store(static_cast<uint32_t>(index_.size()), std::memory_order_relaxed);
    connections_now_.store(static_cast<uint32_t>(conns_.size()), std::memory_order_relaxed);
  }
  // A ping `after` from `now`, on this process's slots: within one slot
  // before now + after.
  absl::Time PingAt(absl::Time now, absl::Duration after) const;
  // This process's ping slots (PingSlot), from the gateway ID: processes on
  // one host (workers have IDs of their own) ping at different instants.
  const absl::Duration ping_phase_;
  // Bumped by whichever thread handles the request.
  mutable std::atomic<uint64_t> bus_requests_{0};
  uint32_t bus_format_version_ = kBusFormatVersion;
  std::atomic<uint32_t> sessions_now_{0};
  std::atomic<uint32_t> connections_now_{0};
};

}  // namespace switchboard::gateway
