#include "common/nats_client_impl.h"

#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/wait.h"

extern char** environ;

namespace switchboard {
namespace {

// With the libnats this project builds against (Debian's 3.4.1), received
// messages are freed on the thread done with them, not handed to the
// library's collector thread with a wake-up each. If a libnats update lays
// its messages out otherwise, this fails and says so (the client still
// works: it falls back to the library's own way).
TEST(NatsClient, ReceivedMessagesAreFreedWithoutWakingTheCollectorThread) {
  EXPECT_TRUE(NatsMessagesFreedInPlace());
}

// A real nats-server on a free loopback port, for the tests of what the
// client does on the wire.
class NatsServer {
 public:
  NatsServer() {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
        getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      port_ = ntohs(a.sin_port);
    }
    close(s);
    Spawn();
  }
  ~NatsServer() { End(); }
  // Gone, then the same server on the same port again.
  void End() {
    if (pid_ <= 0) return;
    kill(pid_, SIGCONT);
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  void Spawn() {
    std::string port = std::to_string(port_);
    std::vector<std::string> args = {"nats-server", "-a", "127.0.0.1", "-p", port};
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    if (posix_spawnp(&pid_, "nats-server", nullptr, nullptr, argv.data(), environ) != 0) pid_ = -1;
  }
  bool started() const { return pid_ > 0 && port_ > 0; }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  void Stop() { kill(pid_, SIGSTOP); }
  void Continue() { kill(pid_, SIGCONT); }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

struct Received {
  absl::Mutex mu;
  std::vector<std::string> messages;
  size_t size() {
    absl::MutexLock lock(&mu);
    return messages.size();
  }
};

// What an event loop publishes goes out in order and whole, also when the
// socket cannot take it at once (the rest is written by the client's own
// thread), and the loop never waits: with the server stopped, every publish
// returns while nothing is read, and all of it arrives once it runs again.
TEST(NatsClient, PublishFromLoopNeverWaitsAndLosesNothing) {
  NatsServer server;
  ASSERT_TRUE(server.started()) << "nats-server (Debian's package) is needed";
  auto sender = NatsClientImpl::Create(server.url(), "sender");
  auto receiver = NatsClientImpl::Create(server.url(), "receiver");
  ASSERT_TRUE(sender.ok() && receiver.ok());
  Received got;
  ASSERT_TRUE((*receiver)
                  ->Subscribe("loop.test",
                              [&got](const std::string&, const std::string&, const std::string& data) {
                                absl::MutexLock lock(&got.mu);
                                got.messages.push_back(data);
                              })
                  .ok());
  ASSERT_TRUE((*sender)->WaitForFirstConnection(absl::Seconds(10)));
  ASSERT_TRUE((*receiver)->WaitForFirstConnection(absl::Seconds(10)));

  auto payload = [](int i) { return std::to_string(i) + ":" + std::string(200 * 1024, static_cast<char>('a' + i % 26)); };
  // Over the socket's buffer at once: the partial-write path.
  for (int i = 0; i < 40; ++i) ASSERT_TRUE((*sender)->PublishFromLoop("loop.test", payload(i)).ok());
  ASSERT_TRUE(testing::WaitFor([&] { return got.size() == 40; }, absl::Seconds(20))) << got.size();

  server.Stop();
  const absl::Time t0 = absl::Now();
  for (int i = 40; i < 80; ++i) ASSERT_TRUE((*sender)->PublishFromLoop("loop.test", payload(i)).ok());
  // 8 MB into a server that reads nothing: returned without waiting for it.
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2));
  server.Continue();
  ASSERT_TRUE(testing::WaitFor([&] { return got.size() == 80; }, absl::Seconds(30))) << got.size();
  absl::MutexLock lock(&got.mu);
  for (int i = 0; i < 80; ++i) EXPECT_EQ(got.messages[i], payload(i)) << "message " << i;
}

// The loop receiver: nothing is handled until an outside loop pumps it, and
// then on that loop's thread, in order; after the server went and came back
// it is connected again and its handlers hear what is published next.
TEST(NatsClient, LoopReceiverRunsHandlersOnThePumpingThread) {
  NatsServer server;
  ASSERT_TRUE(server.started()) << "nats-server (Debian's package) is needed";
  auto sender = NatsClientImpl::Create(server.url(), "sender");
  auto receiver = NatsClientImpl::Create(server.url(), "receiver");
  ASSERT_TRUE(sender.ok() && receiver.ok());
  ASSERT_TRUE((*receiver)->StartLoopReceiver().ok());
  const int fd = (*receiver)->LoopReceiverFd();
  ASSERT_GE(fd, 0);
  Received got;
  std::atomic<int> off_thread{0};
  std::atomic<std::thread::id> pump_thread{};
  ASSERT_TRUE((*receiver)
                  ->SubscribeOnLoop("loop.own",
                                    [&](const std::string&, const std::string&, const std::string& data) {
                                      if (std::this_thread::get_id() != pump_thread.load()) off_thread.fetch_add(1);
                                      absl::MutexLock lock(&got.mu);
                                      got.messages.push_back(data);
                                    })
                  .ok());
  ASSERT_TRUE((*sender)->WaitForFirstConnection(absl::Seconds(10)));
  ASSERT_TRUE((*receiver)->WaitForFirstConnection(absl::Seconds(10)));
  ASSERT_TRUE(testing::WaitFor([&] { return (*receiver)->LoopReceiverConnected(); }, absl::Seconds(10)));

  std::atomic<bool> stop{false};
  std::thread loop([&] {
    pump_thread.store(std::this_thread::get_id());
    while (!stop.load()) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 50) > 0) (*receiver)->PumpLoopReceiver();
    }
  });
  // Heard once the server has the subscription: publish until one arrives.
  int sent = 0;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        (void)(*sender)->PublishNow("loop.own", "hello " + std::to_string(sent++));
        return got.size() > 0;
      },
      absl::Seconds(10)));
  for (int i = 0; i < 100; ++i) ASSERT_TRUE((*sender)->PublishNow("loop.own", std::to_string(i)).ok());
  auto numbered = [&] {
    absl::MutexLock lock(&got.mu);
    std::vector<std::string> out;
    for (const auto& m : got.messages) {
      if (!m.empty() && m.find_first_not_of("0123456789") == std::string::npos) out.push_back(m);
    }
    return out;
  };
  ASSERT_TRUE(testing::WaitFor([&] { return numbered().size() == 100; }, absl::Seconds(10))) << got.size();

  // The server goes and comes back: connected again, and heard again.
  server.End();
  ASSERT_TRUE(testing::WaitFor([&] { return !(*receiver)->LoopReceiverConnected(); }, absl::Seconds(30)));
  server.Spawn();
  ASSERT_TRUE(testing::WaitFor([&] { return (*receiver)->LoopReceiverConnected(); }, absl::Seconds(30)));
  const size_t before_after = got.size();
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        (void)(*sender)->PublishNow("loop.own", "after");
        return got.size() > before_after;
      },
      absl::Seconds(10)));
  stop.store(true);
  loop.join();
  EXPECT_EQ(off_thread.load(), 0);
  const std::vector<std::string> in_order = numbered();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(in_order[i], std::to_string(i));
  absl::MutexLock lock(&got.mu);
  EXPECT_EQ(got.messages.back(), "after");
}

}  // namespace
}  // namespace switchboard
