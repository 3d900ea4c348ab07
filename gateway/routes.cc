#include "gateway/routes.h"

namespace switchboard::gateway {
namespace {

constexpr std::string_view kWebSocketPath = "/connection/websocket";
constexpr std::string_view kUniHttpStreamPath = "/connection/uni_http_stream";
constexpr std::string_view kPusherPrefix = "/app/";

}  // namespace

RouteMatch RouteOf(std::string_view path) {
  RouteMatch m;
  if (path == kWebSocketPath) {
    m.route = Route::kCentrifugeWebSocket;
  } else if (path.substr(0, kPusherPrefix.size()) == kPusherPrefix) {
    m.route = Route::kPusherWebSocket;
    m.pusher_key = std::string(path.substr(kPusherPrefix.size()));
  } else if (path == kUniHttpStreamPath) {
    m.route = Route::kUniHttpStream;
  } else if (path == "/livez" || path == "/healthz" || path == "/readyz") {
    m.route = Route::kHealth;
  }
  return m;
}

Wire WebSocketWire(Route route, std::string_view subprotocol, std::string_view cf_protocol) {
  if (route == Route::kPusherWebSocket) return Wire::kPusher;
  if (subprotocol == kCentrifugeProtobufSubprotocol || cf_protocol == "protobuf") return Wire::kCentrifugeProtobuf;
  return Wire::kCentrifugeJson;
}

}  // namespace switchboard::gateway
