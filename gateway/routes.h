#pragma once

#include <string>
#include <string_view>

#include "gateway/client_protocol.h"

namespace switchboard::gateway {

// What a request to the clients' port is for, from its path alone (no query
// string). The socket layer asks; nothing here touches a socket.
enum class Route {
  kNotFound,
  kCentrifugeWebSocket,  // /connection/websocket
  kPusherWebSocket,      // /app/{key}
  kUniHttpStream,        // /connection/uni_http_stream (POST)
  kHealth,               // /livez, /healthz, /readyz: the status alone here
};

struct RouteMatch {
  Route route = Route::kNotFound;
  std::string pusher_key;  // kPusherWebSocket: what follows /app/
};

RouteMatch RouteOf(std::string_view path);

// The WebSocket subprotocol of Centrifugo's protobuf wire.
inline constexpr char kCentrifugeProtobufSubprotocol[] = "centrifuge-protobuf";

// Only these routes may become WebSockets.
inline bool IsWebSocketRoute(Route r) { return r == Route::kCentrifugeWebSocket || r == Route::kPusherWebSocket; }

// The wire a WebSocket on `route` speaks: Centrifugo's protobuf when the
// client asked for it (the centrifuge-protobuf subprotocol, or
// ?cf_protocol=protobuf), JSON otherwise; Pusher's on /app/.
Wire WebSocketWire(Route route, std::string_view subprotocol, std::string_view cf_protocol);

}  // namespace switchboard::gateway
