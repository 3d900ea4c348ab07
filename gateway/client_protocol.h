#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "gateway/transport.h"
#include "switchboard/v1/bus.pb.h"
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
  std::string pusher_key;       // pusher: the {key} of /app/{key}
  std::string client_name;      // pusher: ?client=
  std::string client_version;   // pusher: ?version=
  std::string pusher_protocol;  // pusher: ?protocol= ("" if absent)
  std::string connect_body;     // uni_http_stream: the POST body
};

// Counters readable on the loop thread.
struct HubStats {
  uint64_t connects_ok = 0;
  uint64_t bad_frames = 0;
  uint64_t bad_tokens = 0;      // connects refused for a token that is not valid (expired ones not included)
  uint64_t expired_tokens = 0;  // connects refused for an expired token (the client may refresh)
  uint64_t refreshes = 0;
  uint64_t late_pong_checks = 0;  // pong deadlines postponed because the loop was late
};

// What the hub offers a protocol for the one connection it serves. Valid only
// during the ClientProtocol call it is passed to. Loop thread only.
class ConnectionHost {
 public:
  virtual ~ConnectionHost() = default;
  virtual const v1::Config& config() const = 0;
  virtual const std::string& gateway_id() const = 0;
  virtual absl::Time Now() const = 0;
  virtual const ConnectionMeta& meta() const = 0;
  virtual HubStats& stats() = 0;

  virtual bool Send(std::string frame, bool binary) = 0;
  // Ends the connection: the session (if any) goes, then the protocol's
  // OnClose() tells the client and picks the close code on the wire. The
  // protocol must not touch the connection after this.
  virtual void Close(int code, const std::string& reason) = 0;
  virtual bool closing() const = 0;

  // The peer may stay without a session (Pusher before signin) until
  // `auth_by`: no connect deadline any more, server pings start; at
  // `auth_by` without a session it is closed as stale. False (and nothing
  // changes) when too many connections already wait to authenticate.
  virtual bool Accept(absl::Time auth_by) = 0;
  // Room for one more session on this gateway?
  virtual bool HasRoom() const = 0;
  // A session record with what every protocol shares (transport, protocol,
  // time, address, gateway) filled in.
  virtual v1::SessionRecord NewRecord(const std::string& client_id, const std::string& app_id,
                                      const std::string& user_id) const = 0;
  // The connection becomes a session of `record` (accepted for good), valid
  // until `expires_at` plus the configured grace. False if the client ID is
  // taken.
  virtual bool StartSession(v1::SessionRecord record, absl::Time expires_at) = 0;
  // A refreshed token: the session now lasts until `expires_at`.
  virtual void ExtendSession(absl::Time expires_at) = 0;
  // The session of this connection, or null.
  virtual std::optional<v1::SessionRecord> session() const = 0;
  // Whether the connection has a session now (cheap: no record is built).
  virtual bool has_session() const = 0;
  // The peer answered our ping (or, for protocols where any traffic counts,
  // spoke): the pong deadline goes; `reset_ping` also restarts the interval.
  virtual void Activity(bool reset_ping) = 0;
};

// Frames already made for one server message, one per wire: every session
// of a user on one wire gets the same bytes, so a request encodes once per
// wire, not once per session. One request, one user (the frames name it).
class EncodedFrames {
 public:
  // The frame for `wire`, made by `encode` the first time.
  template <typename Encode>
  const std::string& Get(Wire wire, Encode encode) {
    auto& slot = frames_[static_cast<size_t>(wire)];
    if (!slot.has_value()) slot = encode();
    return *slot;
  }

 private:
  std::array<std::optional<std::string>, 4> frames_;
};

// A message from the server API (SendToUser / SendToClient) for one
// session, and what became of it.
struct ServerMessage {
  const std::string& app_id;     // the session's app
  const std::string& user_id;    // the session's user
  const std::string& event;      // the event name (Pusher binds to it)
  const std::string& data_json;  // the payload, JSON text
  // Pusher clients get data_json itself as their `data` text, even when it
  // is a JSON string (BusSend.pusher_text_verbatim).
  bool pusher_text_verbatim = false;
  // Set: frames made for earlier sessions of this message (same user) are
  // used again; null: each Deliver encodes its own.
  EncodedFrames* encoded = nullptr;
  template <typename Encode>
  std::string Frame(Wire wire, Encode encode) const {
    return encoded != nullptr ? encoded->Get(wire, encode) : encode();
  }
};
enum class DeliverResult {
  kDelivered,      // handed to the socket layer, in order after what was sent before
  kNotSubscribed,  // the client does not listen for server messages
  kSlow,           // its outbox was full: the connection is being closed as a slow consumer
};

// One client protocol's side of a connection: turns frames into actions on
// the host and tells the client what happens in its own encoding. One object
// per connection, owned by the hub, unless the protocol keeps nothing of its
// own per connection (shared()): then one instance serves every connection
// of its wire. Loop thread only. A new protocol is one new implementation
// plus a line in MakeClientProtocol().
class ClientProtocol {
 public:
  virtual ~ClientProtocol() = default;
  // True for a protocol without per-connection state: a single instance,
  // never deleted (saves an allocation per idle session).
  virtual bool shared() const { return false; }
  virtual const char* transport() const { return "websocket"; }
  virtual const char* protocol() const = 0;
  // Whether the peer must answer server pings (a one-way stream cannot).
  virtual bool ExpectsPong() const { return true; }

  // The socket is open (for uni_http_stream: with its body).
  virtual void OnOpen(ConnectionHost& host) = 0;
  virtual void OnFrame(ConnectionHost& host, std::string_view data, bool binary) = 0;
  virtual void SendPing(ConnectionHost& host) = 0;
  // The connection ends with `code` (a Centrifugo-style code): tell the
  // client if the protocol has a way to, and return the code for the close
  // frame.
  virtual int OnClose(ConnectionHost& host, int code, const std::string& reason) = 0;
  // A server message for this connection's session, in the protocol's own
  // encoding. Not called for a connection that is closing.
  virtual DeliverResult Deliver(ConnectionHost& host, const ServerMessage& message) {
    (void)host;
    (void)message;
    return DeliverResult::kNotSubscribed;
  }
};

// Owns a connection's protocol object unless it is a shared one.
struct ProtocolDeleter {
  void operator()(ClientProtocol* p) const {
    if (p != nullptr && !p->shared()) delete p;
  }
};
using ProtocolPtr = std::unique_ptr<ClientProtocol, ProtocolDeleter>;

// The protocol for a wire (gateway/client_protocols.cc).
ProtocolPtr MakeClientProtocol(Wire wire);

// Peer-supplied strings that end up in session records must be UTF-8: one
// client's bytes must never make a gateway's answer unparseable. Invalid
// sequences become U+FFFD.
std::string SafeUtf8(const std::string& in);

inline constexpr size_t kMaxIdLength = 256;
// The server version clients see (Centrifugo's connect reply `version`):
// "switchboard <the one version>" (common/version.h).
const std::string& ServerVersion();

}  // namespace switchboard::gateway
