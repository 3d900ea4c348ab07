#pragma once

#include <cstdint>

#include "switchboard/v1/config.pb.h"

namespace switchboard::testing {

constexpr char kDemoSecret[] = "demo-secret-123";

// What the gateway's unit tests start from: the default app "demo" (key
// "demo-key", secret kDemoSecret) and the gateway's timings (ping 25 s, pong
// deadline 8 s, connect 10 s, Pusher sign-in 30 s, 64 KiB messages), with
// room for `max_sessions` sessions of which `max_unsigned` may wait to
// authenticate. A test adds or changes what it is about.
inline v1::Config DemoGatewayConfig(uint32_t max_sessions, uint32_t max_unsigned) {
  v1::Config config;
  auto* app = config.add_apps();
  app->set_id("demo");
  app->set_key("demo-key");
  app->set_secret(kDemoSecret);
  config.set_default_app("demo");
  auto* gw = config.mutable_gateway();
  gw->set_ping_interval_s(25);
  gw->set_pong_timeout_s(8);
  gw->set_connect_timeout_ms(10000);
  gw->set_max_sessions(max_sessions);
  gw->set_max_unsigned(max_unsigned);
  gw->set_pusher_signin_timeout_s(30);
  gw->set_max_message_bytes(65536);
  return config;
}

}  // namespace switchboard::testing
