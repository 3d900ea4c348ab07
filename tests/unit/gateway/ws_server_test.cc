#include "gateway/ws_server.h"

#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

TEST(WsServer, LoopQueueIsBoundedAndRefusesWhenFull) {
  WsServer::Options options;
  options.host = "127.0.0.1";
  options.port = 0;
  auto server = WsServer::Create(options);
  ASSERT_TRUE(server.ok()) << server.status();
  // The loop is not running: nothing drains the queue.
  int ran = 0;
  size_t accepted = 0;
  while ((*server)->Post([&ran] { ++ran; })) ++accepted;
  EXPECT_EQ(accepted, 65536u);
  EXPECT_EQ((*server)->posts_dropped(), 1u);
  EXPECT_FALSE((*server)->Post([] {}));
  EXPECT_EQ((*server)->posts_dropped(), 2u);
  EXPECT_EQ(ran, 0);
}

}  // namespace
}  // namespace switchboard::gateway
