#include "gateway/frame_guard.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

// A client frame: FIN + opcode, masked unless told, the payload masked with
// a zero key (the scanner never reads payloads).
std::string Frame(uint8_t first, size_t len, bool masked = true) {
  std::string f(1, static_cast<char>(first));
  const char m = masked ? static_cast<char>(0x80) : 0;
  if (len < 126) {
    f += static_cast<char>(m | static_cast<char>(len));
  } else if (len < 65536) {
    f += static_cast<char>(m | 126);
    f += static_cast<char>(len >> 8);
    f += static_cast<char>(len & 0xff);
  } else {
    f += static_cast<char>(m | 127);
    for (int i = 7; i >= 0; --i) f += static_cast<char>((static_cast<uint64_t>(len) >> (8 * i)) & 0xff);
  }
  if (masked) f += std::string(4, '\0');
  return f + std::string(len, 'x');
}

size_t FeedAll(FrameScanner& s, const std::string& bytes, size_t chunk, const char** why) {
  for (size_t off = 0; off < bytes.size(); off += chunk) {
    const size_t n = std::min(chunk, bytes.size() - off);
    const size_t at = s.Feed(reinterpret_cast<const uint8_t*>(bytes.data()) + off, n, why);
    if (at != FrameScanner::kNone) return off + at;
  }
  return FrameScanner::kNone;
}

TEST(FrameScanner, LetsWellFormedClientFramesThroughInAnyChunking) {
  const std::string stream = Frame(0x81, 5) + Frame(0x82, 300) + Frame(0x01, 70000) + Frame(0x80, 3) +
                             Frame(0x89, 125) + Frame(0x8a, 0) + Frame(0x88, 2) + Frame(0xc1, 4);  // RSV1: deflate
  for (size_t chunk : {1u, 2u, 3u, 7u, 13u, 4096u, 1u << 20}) {
    FrameScanner s;
    const char* why = nullptr;
    EXPECT_EQ(FeedAll(s, stream, chunk, &why), FrameScanner::kNone) << chunk << " " << (why ? why : "");
    EXPECT_FALSE(s.tripped());
  }
}

TEST(FrameScanner, FindsTheFirstByteOfEachForbiddenFrame) {
  const std::string ok = Frame(0x81, 10) + Frame(0x82, 200);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {Frame(0x81, 8, /*masked=*/false), "unmasked client frame"},
      {Frame(0x89, 200), "control frame longer than 125 bytes"},
      {Frame(0x88, 126), "control frame longer than 125 bytes"},
      {Frame(0x09, 4), "fragmented control frame"},
      {Frame(0x83, 1), "reserved opcode"},
      {Frame(0x8b, 1), "reserved opcode"},
      {Frame(0xa1, 1), "reserved bits RSV2/RSV3 set"},
  };
  for (const auto& [bad, reason] : cases) {
    for (size_t chunk : {1u, 5u, 4096u}) {
      FrameScanner s;
      const char* why = nullptr;
      // Bytes shown before the verdict: the good frames, and the offending
      // header's first byte when a read ended right after it (it is judged
      // on two bytes; lws then holds a byte it can do nothing with).
      const size_t shown = FeedAll(s, ok + bad + ok, chunk, &why);
      EXPECT_GE(shown, ok.size()) << reason << " chunk " << chunk;
      EXPECT_LE(shown, ok.size() + 1) << reason << " chunk " << chunk;
      if (chunk == 4096) {
        EXPECT_EQ(shown, ok.size()) << reason;
      }
      ASSERT_NE(why, nullptr);
      EXPECT_EQ(std::string(why), reason);
      EXPECT_TRUE(s.tripped());
      // Tripped for good: nothing later is let through.
      EXPECT_EQ(s.Feed(reinterpret_cast<const uint8_t*>(ok.data()), ok.size(), &why), 0u);
    }
  }
}

TEST(FrameScanner, AHeaderSplitAcrossReadsIsJudgedInTheReadThatCompletesIt) {
  const std::string bad = Frame(0x81, 8, false);
  FrameScanner s;
  const char* why = nullptr;
  EXPECT_EQ(s.Feed(reinterpret_cast<const uint8_t*>(bad.data()), 1, &why), FrameScanner::kNone);
  // The offending frame began before this read: offset 0, nothing of it shown.
  EXPECT_EQ(s.Feed(reinterpret_cast<const uint8_t*>(bad.data()) + 1, bad.size() - 1, &why), 0u);
}

struct Seen {
  std::vector<std::pair<uint64_t, std::string>> violations;
};

// Through the interposed recv(): what lws would read from a watched socket.
TEST(FrameGuard, ARecvOnAWatchedSocketStopsBeforeTheForbiddenFrameAndReportsIt) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  Seen seen;
  frame_guard::SetHandler(
      [](void* ctx, uint64_t conn, const char* why) { static_cast<Seen*>(ctx)->violations.emplace_back(conn, why); },
      &seen);
  frame_guard::Watch(sv[0], 42);
  const std::string ok = Frame(0x81, 10);
  const std::string bytes = ok + Frame(0x81, 8, false) + ok;
  ASSERT_EQ(write(sv[1], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  char buf[4096];
  EXPECT_EQ(recv(sv[0], buf, sizeof(buf), 0), static_cast<ssize_t>(ok.size()));
  ASSERT_EQ(seen.violations.size(), 1u);
  EXPECT_EQ(seen.violations[0], std::make_pair(uint64_t{42}, std::string("unmasked client frame")));
  // Later bytes are thrown away; lws hears "nothing yet", and the end of
  // the stream as it is.
  ASSERT_EQ(write(sv[1], ok.data(), ok.size()), static_cast<ssize_t>(ok.size()));
  errno = 0;
  EXPECT_EQ(recv(sv[0], buf, sizeof(buf), 0), -1);
  EXPECT_EQ(errno, EAGAIN);
  close(sv[1]);
  EXPECT_EQ(recv(sv[0], buf, sizeof(buf), 0), 0);
  EXPECT_EQ(seen.violations.size(), 1u);
  // An unwatched descriptor (a new socket, HTTP until its upgrade) is read as is.
  frame_guard::Forget(sv[0]);
  close(sv[0]);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  frame_guard::Forget(sv[0]);
  ASSERT_EQ(write(sv[1], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  EXPECT_EQ(recv(sv[0], buf, sizeof(buf), 0), static_cast<ssize_t>(bytes.size()));
  EXPECT_EQ(seen.violations.size(), 1u);
  close(sv[0]);
  close(sv[1]);
  frame_guard::SetHandler(nullptr, nullptr);
}

}  // namespace
}  // namespace switchboard::gateway
