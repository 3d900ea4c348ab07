#pragma once

#include <string>

#include "gateway/client_protocol.h"

namespace switchboard::gateway {

// Pusher Channels protocol 7 (5 and 6 too): connection_established,
// ping/pong both ways, pusher:signin (HMAC-SHA256 with the app secret). Only a
// signed-in connection is a session of a user; its socket_id is the client
// ID. Loop thread only.
class PusherProtocol final : public ClientProtocol {
 public:
  const char* protocol() const override { return "pusher"; }
  void OnOpen(ConnectionHost& host) override;
  void OnFrame(ConnectionHost& host, std::string_view data, bool binary) override;
  void SendPing(ConnectionHost& host) override;
  // Pusher clients read close codes in their own ranges: 4000-4099 do not
  // reconnect, 4200-4299 reconnect at once. Pusher-native codes pass
  // through; Centrifugo-style ones map by whether they mean "reconnect".
  int OnClose(ConnectionHost& host, int code, const std::string& reason) override;
  // An event on the signed-in user's #server-to-user-<id> channel, once the
  // client subscribed to it (pusher-js does right after signin).
  DeliverResult Deliver(ConnectionHost& host, const ServerMessage& message) override;

 private:
  void Subscribe(ConnectionHost& host, const std::string& channel);
  void Signin(ConnectionHost& host, const std::string& auth, const std::string& user_data);

  std::string app_id_;
  std::string socket_id_;
  bool server_to_user_ = false;  // subscribed to its user's #server-to-user channel
};

// Pusher's channel for events sent to a signed-in user.
inline std::string ServerToUserChannel(const std::string& user_id) { return "#server-to-user-" + user_id; }

}  // namespace switchboard::gateway
