#include "gateway/ws_server.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

TEST(WsServer, LoopQueueIsBoundedAndRefusesWhenFull) {
  WsServer::Options options;
  options.host = "127.0.0.1";
  options.port = 0;
  auto created = WsServer::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  WsServer* server = created->get();
  // The loop is not running yet: nothing drains the queue.
  std::atomic<int> ran{0};
  size_t accepted = 0;
  while (server->Post([&ran] { ++ran; })) ++accepted;
  EXPECT_EQ(accepted, 65536u);
  EXPECT_EQ(server->posts_dropped(), 1u);
  EXPECT_FALSE(server->Post([] {}));
  EXPECT_EQ(server->posts_dropped(), 2u);
  EXPECT_EQ(ran.load(), 0);

  // Once the loop runs, the queue drains and takes work again; then the
  // loop ends the normal way (Shutdown from inside, Run returns).
  std::thread loop([server] { server->Run(); });
  absl::Notification drained;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!server->Post([&drained] { drained.Notify(); })) {
    ASSERT_LT(absl::Now(), deadline) << "the loop never drained its queue";
    std::this_thread::yield();  // the loop is emptying the full queue
  }
  ASSERT_TRUE(drained.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(ran.load(), 65536);
  ASSERT_TRUE(server->Post([server] { server->Shutdown(); }));
  loop.join();
  EXPECT_FALSE(server->Post([] {}));  // the loop has ended
}

TEST(WsServerDeathTest, ALoopOnlyCallFromAnotherThreadAbortsNamingIt) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        WsServer::Options options;
        options.host = "127.0.0.1";
        auto created = WsServer::Create(options);
        if (!created.ok()) std::abort();
        WsServer* server = created->get();
        absl::Notification running;
        std::thread loop([server] { server->Run(); });
        server->Post([&running] { running.Notify(); });
        running.WaitForNotification();
        server->Close(1, 3000, "from the wrong thread");  // not on the loop: must abort
      },
      "Close called off the loop thread");
}

}  // namespace
}  // namespace switchboard::gateway
