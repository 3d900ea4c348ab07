#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "gateway/jwt_verifier.h"
#include "gateway/session_index.h"
#include "gateway/transport.h"
#include "switchboard/v1/bus.pb.h"
#include "switchboard/v1/client.pb.h"
#include "switchboard/v1/config.pb.h"

namespace switchboard::gateway {

// The client protocol a connection speaks, chosen by the socket layer from the
// URL, subprotocol and method.
enum class Wire {
  kCentrifugeJson,      // /connection/websocket, text frames
  kCentrifugeProtobuf,  // /connection/websocket, subprotocol centrifuge-protobuf or ?cf_protocol=protobuf
  kUniHttpStream,       // POST /connection/uni_http_stream: JSON lines out, nothing in
  kPusher,              // /app/{key}, Pusher Channels protocol 7
};

// What the socket layer knows about a new connection.
struct ConnectionMeta {
  std::string remote_addr;
  std::string app_id;  // centrifuge: ?app=; "" means the default app
  Wire wire = Wire::kCentrifugeJson;
  std::string pusher_key;      // pusher: the {key} of /app/{key}
  std::string client_name;     // pusher: ?client=
  std::string client_version;  // pusher: ?version=
  std::string pusher_protocol; // pusher: ?protocol= ("" if absent)
  std::string connect_body;    // uni_http_stream: the POST body
};

// Counters readable on the loop thread.
struct HubStats {
  uint64_t connects_ok = 0;
  uint64_t bad_frames = 0;
  uint64_t bad_tokens = 0;
  uint64_t bus_requests = 0;
  uint64_t refreshes = 0;
};

// The token checks configured for an app.
TokenPolicy PolicyOf(const v1::AppConfig& app);

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

  // Closes up to `max` open connections with `code` (e.g. shutdown); returns
  // how many it closed.
  size_t CloseAll(int code, const std::string& reason, size_t max = SIZE_MAX);

  std::vector<v1::SessionRecord> Snapshot() const { return index_.All(); }
  size_t connection_count() const { return conns_.size(); }
  // Connections not yet told to close.
  size_t open_count() const;
  size_t session_count() const { return index_.size(); }
  const HubStats& stats() const { return stats_; }

 private:
  enum class State { kAwaitingConnect, kConnected, kClosing };
  struct Conn {
    State state = State::kAwaitingConnect;
    ConnectionMeta meta;
    std::string client_id;  // set once connected (pusher: the socket_id, session once signed in)
    std::string app_id;     // pusher: resolved from the key at open
    bool session = false;   // in the session index
    absl::Time connect_deadline = absl::InfiniteFuture();
    absl::Time next_ping = absl::InfiniteFuture();
    absl::Time pong_deadline = absl::InfiniteFuture();
    absl::Time expires_at = absl::InfiniteFuture();  // the token's exp; closed a grace period later
  };

  // Centrifugo protocol (hub.cc).
  void HandleCommand(ConnId id, Conn& conn, const v1::ClientCommand& cmd);
  void HandleConnect(ConnId id, Conn& conn, const v1::ClientCommand& cmd);
  void HandleRefresh(ConnId id, Conn& conn, const v1::ClientCommand& cmd);
  // When an expired connection is closed: its token's exp plus the grace.
  absl::Time ExpiredCloseAt(const Conn& conn) const;
  void SendReply(ConnId id, const Conn& conn, const v1::ClientReply& reply);
  void SendPush(ConnId id, const Conn& conn, const v1::ClientPush& push);
  void SendError(ConnId id, const Conn& conn, uint32_t cmd_id, uint32_t code, const std::string& message);
  void SendPing(ConnId id, const Conn& conn);

  // Pusher Channels protocol (hub_pusher.cc).
  void PusherOpen(ConnId id, Conn& conn);
  void PusherFrame(ConnId id, Conn& conn, std::string_view data, bool binary);
  void PusherSignin(ConnId id, Conn& conn, const std::string& auth, const std::string& user_data);
  void PusherSend(ConnId id, const std::string& event, const std::string& data_json,
                  const std::string& channel = "");
  void PusherError(ConnId id, int code, const std::string& message);

  // A session record for this connection, filled with what all protocols share.
  v1::SessionRecord NewRecord(const Conn& conn, const std::string& client_id, const std::string& app_id,
                              const std::string& user_id);
  void AddSession(ConnId id, Conn& conn, const v1::SessionRecord& record);
  // Drops the session (if any) from the index, tells the client in its own
  // protocol where it has a way to, and asks the transport to close. `code`
  // is a Centrifugo code (pusher connections map it, see hub_pusher.cc).
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
