#include "gateway/ws_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gateway/hub.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/gateway_config.h"
#include "tests/unit/testing/tokens.h"

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

// The test's side of a WebSocket: a blocking socket, frames by hand.
class RawClient {
 public:
  struct Frame {
    int opcode;
    std::string payload;
  };
  explicit RawClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    timeval tv{10, 0};  // a bound on every read: a test that hangs fails instead
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~RawClient() { close(fd_); }
  bool Handshake() {
    if (!connected_ || !WriteAll("GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                 "Sec-WebSocket-Version: 13\r\n\r\n")) {
      return false;
    }
    std::string head;
    char c;
    while (head.find("\r\n\r\n") == std::string::npos) {
      if (recv(fd_, &c, 1, 0) != 1) return false;
      head += c;
    }
    return head.find(" 101 ") != std::string::npos;
  }
  // A masked frame (mask 0: the payload goes as it is).
  bool Send(int opcode, const std::string& payload) {
    std::string f(1, static_cast<char>(0x80 | opcode));
    if (payload.size() < 126) {
      f += static_cast<char>(0x80 | payload.size());
    } else {
      f += static_cast<char>(0x80 | 126);
      f += static_cast<char>(payload.size() >> 8);
      f += static_cast<char>(payload.size() & 0xff);
    }
    f += std::string(4, '\0') + payload;
    return WriteAll(f);
  }
  std::optional<Frame> Read() {
    std::string h;
    if (!ReadN(2, &h)) return std::nullopt;
    uint64_t n = static_cast<uint8_t>(h[1]) & 0x7f;
    std::string ext;
    if (n == 126 || n == 127) {
      if (!ReadN(n == 126 ? 2 : 8, &ext)) return std::nullopt;
      n = 0;
      for (char b : ext) n = (n << 8) | static_cast<uint8_t>(b);
    }
    Frame f{static_cast<uint8_t>(h[0]) & 0x0f, {}};
    if (!ReadN(n, &f.payload)) return std::nullopt;
    return f;
  }
  bool PeerClosed() {
    char c;
    return recv(fd_, &c, 1, 0) == 0;
  }

 private:
  bool WriteAll(const std::string& s) { return send(fd_, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size()); }
  bool ReadN(uint64_t n, std::string* out) {
    out->clear();
    while (out->size() < n) {
      char buf[4096];
      const ssize_t got = recv(fd_, buf, std::min<uint64_t>(sizeof(buf), n - out->size()), 0);
      if (got <= 0) return false;
      out->append(buf, static_cast<size_t>(got));
    }
    return true;
  }
  int fd_;
  bool connected_ = false;
};

class NoObserver : public SessionObserver {
 public:
  void OnSessionOpened(const v1::SessionRecord&) override {}
  void OnSessionClosed(const std::string&) override {}
};

// Bus commands run as the loop's posted tasks, and the frames they send are
// written after the batch (the answers first): within one batch, two sends
// and a terminate of the same user still reach the client in that order —
// both messages, then the close frame with the terminate's code.
TEST(WsServer, FramesOfOneBatchOfCommandsReachTheClientInOrderBeforeItsClose) {
  const v1::Config config = testing::DemoGatewayConfig(/*max_sessions=*/10, /*max_unsigned=*/10);
  auto created = WsServer::Create(WsServer::Options{});
  ASSERT_TRUE(created.ok()) << created.status();
  WsServer* server = created->get();
  NoObserver observer;
  Hub hub(config, "gw-test", server, &observer);
  server->set_hub(&hub);
  std::thread loop([server] { server->Run(); });

  RawClient client(server->port());
  ASSERT_TRUE(client.Handshake());
  ASSERT_TRUE(client.Send(1, absl::StrCat(R"({"id":1,"connect":{"token":")",
                                          testing::MakeToken(R"({"sub":"42"})", "demo-secret-123"), R"("}})")));
  auto reply = client.Read();
  ASSERT_TRUE(reply.has_value());
  ASSERT_NE(reply->payload.find("\"connect\""), std::string::npos) << reply->payload;

  // One batch of commands, run as the bus runs them (posted to the loop);
  // their answers.
  auto batch = [&](std::vector<int> sends, bool terminate) {
    std::vector<v1::BusReply> answers;
    absl::Notification ran;
    EXPECT_TRUE(server->Post([&] {
      for (int n : sends) {
        v1::BusRequest req;
        req.set_format_version(1);
        req.set_request_id(absl::StrCat("send-", n));
        auto* m = req.mutable_send();
        m->set_app_id("demo");
        m->set_user_id("42");
        m->set_event("e");
        m->set_data_json(absl::StrCat(R"({"n":)", n, "}"));
        answers.push_back(hub.HandleBusRequest(req));
      }
      if (terminate) {
        v1::BusRequest req;
        req.set_format_version(1);
        req.set_request_id("terminate");
        req.mutable_terminate()->set_app_id("demo");
        req.mutable_terminate()->set_user_id("42");
        req.mutable_terminate()->set_code(4001);
        answers.push_back(hub.HandleBusRequest(req));
      }
      ran.Notify();
    }));
    EXPECT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
    return answers;
  };
  auto has = [](const std::optional<RawClient::Frame>& f, int n) {
    return f.has_value() && f->opcode == 1 && f->payload.find(absl::StrCat(R"({"n":)", n, "}")) != std::string::npos;
  };

  // Sends alone: written after the batch, in order.
  auto answers = batch({1, 2}, false);
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_EQ(answers[0].delivered() + answers[1].delivered(), 2u);
  EXPECT_TRUE(has(client.Read(), 1));
  EXPECT_TRUE(has(client.Read(), 2));
  // Sends and then a terminate in one batch: the messages, then the close.
  answers = batch({3, 4}, true);
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers[2].closed(), 1u);
  EXPECT_TRUE(has(client.Read(), 3));
  EXPECT_TRUE(has(client.Read(), 4));
  auto close = client.Read();
  ASSERT_TRUE(close.has_value());
  ASSERT_EQ(close->opcode, 8);
  ASSERT_GE(close->payload.size(), 2u);
  EXPECT_EQ((static_cast<uint8_t>(close->payload[0]) << 8) | static_cast<uint8_t>(close->payload[1]), 4001);
  ASSERT_TRUE(client.Send(8, close->payload.substr(0, 2)));
  EXPECT_TRUE(client.PeerClosed());

  absl::Notification empty;
  ASSERT_TRUE(server->Post([&] { server->NotifyWhenEmpty([&] { empty.Notify(); }); }));
  ASSERT_TRUE(empty.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(server->Post([server] { server->Shutdown(); }));
  loop.join();
}

}  // namespace
}  // namespace switchboard::gateway
