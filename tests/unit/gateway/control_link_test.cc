#include "gateway/control_link.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "tests/unit/testing/wait.h"

namespace switchboard::gateway {
namespace {

// Never asked: a link that cannot connect takes no snapshot.
class NoLoop : public Dispatcher {
 public:
  bool Post(std::function<void()>) override { return false; }
};

// A loopback port nobody listens on (bound by the kernel, then released).
int RefusingPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// Every line the default logger writes while it lives.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  int Count(const std::string& needle) {
    sink_->flush();
    const std::string text = out_.str();
    int n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

TEST(ControlLinkTest, AControlThatCannotBeReachedIsLoggedOnceNotOnEveryRetry) {
  const int port = RefusingPort();
  ASSERT_GT(port, 0);
  LogCapture logs;
  NoLoop loop;
  ControlLink::Options options;
  options.lease = absl::Milliseconds(300);  // retries at most every 100 ms
  v1::GatewayHello hello;
  hello.set_gateway_id("gw-test");
  ControlLink link("127.0.0.1:" + std::to_string(port), hello, &loop, [] { return std::vector<v1::SessionRecord>{}; },
                   options);
  link.Start();
  testing::WaitFor([&link] { return link.failed_attempts() >= 5; }, absl::Seconds(20));
  link.Stop();
  ASSERT_GE(link.failed_attempts(), 5);
  EXPECT_FALSE(link.attached());
  // The same reason every time: said once (the next line about it would come
  // after 30 s, or as soon as the reason changed).
  EXPECT_EQ(logs.Count("cannot attach"), 1);
  EXPECT_EQ(logs.Count("detached"), 0);  // it never was attached
}

}  // namespace
}  // namespace switchboard::gateway
