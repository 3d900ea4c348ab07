#include "gateway/routes.h"

#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

TEST(Routes, EachClientPathHasItsRouteAndNothingElseDoes) {
  EXPECT_EQ(RouteOf("/connection/websocket").route, Route::kCentrifugeWebSocket);
  EXPECT_EQ(RouteOf("/connection/uni_http_stream").route, Route::kUniHttpStream);
  EXPECT_EQ(RouteOf("/livez").route, Route::kHealth);
  EXPECT_EQ(RouteOf("/healthz").route, Route::kHealth);
  EXPECT_EQ(RouteOf("/readyz").route, Route::kHealth);
  for (const char* other : {"", "/", "/connection", "/connection/websocket/", "/connection/websocketx",
                            "/CONNECTION/WEBSOCKET", "/app", "/apps/key", "/metrics", "/readyz/",
                            "/connection/uni_http_stream/x", "//connection/websocket"}) {
    EXPECT_EQ(RouteOf(other).route, Route::kNotFound) << other;
  }
}

TEST(Routes, PusherPathsCarryTheirKey) {
  RouteMatch m = RouteOf("/app/abc123");
  EXPECT_EQ(m.route, Route::kPusherWebSocket);
  EXPECT_EQ(m.pusher_key, "abc123");
  // An empty key is Pusher's route too: the protocol answers it (4001), not a 404.
  EXPECT_EQ(RouteOf("/app/").route, Route::kPusherWebSocket);
  EXPECT_EQ(RouteOf("/app/").pusher_key, "");
  EXPECT_TRUE(IsWebSocketRoute(Route::kPusherWebSocket));
  EXPECT_TRUE(IsWebSocketRoute(Route::kCentrifugeWebSocket));
  EXPECT_FALSE(IsWebSocketRoute(Route::kUniHttpStream));
  EXPECT_FALSE(IsWebSocketRoute(Route::kHealth));
  EXPECT_FALSE(IsWebSocketRoute(Route::kNotFound));
}

TEST(Routes, TheWireFollowsTheRouteAndTheClientsAsk) {
  EXPECT_EQ(WebSocketWire(Route::kCentrifugeWebSocket, "", ""), Wire::kCentrifugeJson);
  EXPECT_EQ(WebSocketWire(Route::kCentrifugeWebSocket, kCentrifugeProtobufSubprotocol, ""), Wire::kCentrifugeProtobuf);
  EXPECT_EQ(WebSocketWire(Route::kCentrifugeWebSocket, "", "protobuf"), Wire::kCentrifugeProtobuf);
  EXPECT_EQ(WebSocketWire(Route::kCentrifugeWebSocket, "", "json"), Wire::kCentrifugeJson);
  EXPECT_EQ(WebSocketWire(Route::kCentrifugeWebSocket, "centrifuge-json", "PROTOBUF"), Wire::kCentrifugeJson);
  // Pusher speaks its own wire whatever else the client asks.
  EXPECT_EQ(WebSocketWire(Route::kPusherWebSocket, kCentrifugeProtobufSubprotocol, "protobuf"), Wire::kPusher);
}

}  // namespace
}  // namespace switchboard::gateway
