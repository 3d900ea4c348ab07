#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "gateway/session_index.h"
#include "gateway/transport.h"
#include "switchboard/v1/bus.pb.h"
#include "switchboard/v1/client.pb.h"
#include "switchboard/v1/config.pb.h"

namespace switchboard::gateway {

// What the socket layer knows about a new connection.
struct ConnectionMeta {
  std::string remote_addr;
  std::string app_id;     // from the URL (?app=); "" means the default app
  std::string transport;  // "websocket"
  std::string protocol;   // "json"
};

// Counters readable on the loop thread.
struct HubStats {
  uint64_t connects_ok = 0;
  uint64_t bad_frames = 0;
  uint64_t bad_tokens = 0;
  uint64_t bus_requests = 0;
};

// The gateway's business logic: client protocol state machines, the session
// index, and answers to the control service's bus requests. Knows nothing of
// lws, NATS or gRPC. Loop thread only.
class Hub {
 public:
  using Clock = std::function<absl::Time()>;
  Hub(const v1::Config& config, std::string gateway_id, Transport* transport,
      SessionObserver* observer, Clock clock = absl::Now);

  void OnOpen(ConnId conn, ConnectionMeta meta);
  void OnFrame(ConnId conn, std::string_view data, bool binary);
  void OnTimer(ConnId conn);
  void OnClosed(ConnId conn);
  // The socket layer refused the frame for its size.
  void OnOversizedFrame(ConnId conn);

  v1::BusReply HandleBusRequest(const v1::BusRequest& request);

  // Closes every connection with `code` (e.g. shutdown); returns how many.
  size_t CloseAll(int code, const std::string& reason);

  std::vector<v1::SessionRecord> Snapshot() const { return index_.All(); }
  size_t connection_count() const { return conns_.size(); }
  size_t session_count() const { return index_.size(); }
  const HubStats& stats() const { return stats_; }

 private:
  enum class State { kAwaitingConnect, kConnected, kClosing };
  struct Conn {
    State state = State::kAwaitingConnect;
    ConnectionMeta meta;
    std::string client_id;  // set once connected
    absl::Time connect_deadline;
    absl::Time next_ping = absl::InfiniteFuture();
    absl::Time pong_deadline = absl::InfiniteFuture();
    absl::Time expires_at = absl::InfiniteFuture();
  };

  void HandleCommand(ConnId id, Conn& conn, const v1::ClientCommand& cmd);
  void HandleConnect(ConnId id, Conn& conn, const v1::ClientCommand& cmd);
  void SendReply(ConnId id, const v1::ClientReply& reply);
  void SendError(ConnId id, uint32_t cmd_id, uint32_t code, const std::string& message);
  // Drops the session (if any) from the index and asks the transport to close.
  void CloseConn(ConnId id, Conn& conn, int code, const std::string& reason);
  void Rearm(ConnId id, const Conn& conn);

  const v1::Config& config_;
  std::string gateway_id_;
  Transport* transport_;
  SessionObserver* observer_;
  Clock clock_;
  SessionIndex index_;
  absl::flat_hash_map<ConnId, Conn> conns_;
  HubStats stats_;
};

}  // namespace switchboard::gateway
