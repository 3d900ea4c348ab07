#include "gateway/proxy_protocol.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "gateway/frame_guard.h"
#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

std::string V2(uint8_t cmd, uint8_t fam, const std::string& addrs) {
  std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
  h += static_cast<char>(0x20 | cmd);
  h += static_cast<char>(fam);
  h += static_cast<char>(addrs.size() >> 8);
  h += static_cast<char>(addrs.size() & 0xff);
  return h + addrs;
}

std::string V2Ipv4(const std::string& src_ip) {
  std::string a(12, '\0');
  inet_pton(AF_INET, src_ip.c_str(), a.data());
  inet_pton(AF_INET, "10.0.0.1", a.data() + 4);
  a[8] = 0x30, a[9] = 0x39, a[10] = 0x1f, a[11] = 0x41;  // ports 12345, 8001
  return V2(1, 0x11, a);
}

ProxyParse Parse(const std::string& s, ProxyHeader* h, std::string* why) {
  return ParseProxyHeader(reinterpret_cast<const uint8_t*>(s.data()), s.size(), h, why);
}

TEST(ProxyProtocol, ReadsVersionOneAndTwoWithTheirLength) {
  ProxyHeader h;
  std::string why;
  const std::string v1 = "PROXY TCP4 192.0.2.7 10.0.0.1 56324 8001\r\n";
  ASSERT_EQ(Parse(v1 + "GET / HTTP/1.1\r\n", &h, &why), ProxyParse::kDone) << why;
  EXPECT_EQ(h.client_ip, "192.0.2.7");
  EXPECT_EQ(h.length, v1.size());
  ASSERT_EQ(Parse("PROXY TCP6 2001:db8::7 2001:db8::1 1 2\r\n", &h, &why), ProxyParse::kDone) << why;
  EXPECT_EQ(h.client_ip, "2001:db8::7");
  ASSERT_EQ(Parse("PROXY UNKNOWN\r\n", &h, &why), ProxyParse::kDone);
  EXPECT_EQ(h.client_ip, "");
  const std::string v2 = V2Ipv4("198.51.100.9");
  ASSERT_EQ(Parse(v2 + "GET", &h, &why), ProxyParse::kDone) << why;
  EXPECT_EQ(h.client_ip, "198.51.100.9");
  EXPECT_EQ(h.length, v2.size());
  std::string a6(36, '\0');
  inet_pton(AF_INET6, "2001:db8::9", a6.data());
  ASSERT_EQ(Parse(V2(1, 0x21, a6), &h, &why), ProxyParse::kDone) << why;
  EXPECT_EQ(h.client_ip, "2001:db8::9");
  ASSERT_EQ(Parse(V2(0, 0x00, ""), &h, &why), ProxyParse::kDone);  // LOCAL: a health check
  EXPECT_EQ(h.client_ip, "");
  // TLVs after the addresses are skipped with the header.
  const std::string tlv = V2(1, 0x11, std::string(12, '\1') + std::string("\x04\x00\x02hi", 5));
  ASSERT_EQ(Parse(tlv, &h, &why), ProxyParse::kDone);
  EXPECT_EQ(h.length, tlv.size());
}

TEST(ProxyProtocol, WaitsForAWholeHeaderAndRefusesAnythingElse) {
  ProxyHeader h;
  std::string why;
  const std::string v2 = V2Ipv4("198.51.100.9");
  for (size_t n = 1; n < v2.size(); ++n) EXPECT_EQ(Parse(v2.substr(0, n), &h, &why), ProxyParse::kIncomplete) << n;
  EXPECT_EQ(Parse("PROXY TCP4 1.2.3.4", &h, &why), ProxyParse::kIncomplete);
  EXPECT_EQ(Parse("PRO", &h, &why), ProxyParse::kIncomplete);
  for (const std::string& bad : {std::string("GET / HTTP/1.1\r\n"), std::string("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
                                std::string("PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n"),
                                std::string("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
                                std::string("PROXY TCP4 ") + std::string(120, 'x'),
                                std::string("\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c", 16) + std::string(12, '\0'),
                                V2(1, 0x11, std::string(4, '\0')), V2(1, 0x12, std::string(12, '\0')),
                                V2(1, 0x11, std::string(600, '\0'))}) {
    EXPECT_EQ(Parse(bad, &h, &why), ProxyParse::kInvalid) << bad;
    EXPECT_FALSE(why.empty());
  }
}

TEST(ProxyProtocol, TrustedCidrsAndForwardedFor) {
  auto set = CidrSet::Parse({"10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "172.16.0.0/12"});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_TRUE(set->Contains("10.1.2.3"));
  EXPECT_TRUE(set->Contains("192.0.2.7"));
  EXPECT_FALSE(set->Contains("192.0.2.8"));
  EXPECT_TRUE(set->Contains("172.31.255.255"));
  EXPECT_FALSE(set->Contains("172.32.0.0"));
  EXPECT_TRUE(set->Contains("2001:db8:1::5"));
  EXPECT_FALSE(set->Contains("2001:db9::5"));
  EXPECT_FALSE(set->Contains("not an address"));
  EXPECT_FALSE(CidrSet::Parse({"10.0.0.0/33"}).ok());
  EXPECT_FALSE(CidrSet::Parse({"example.com"}).ok());
  // The rightmost entry that is not a trusted proxy: what the client wrote
  // to the left of it is not believed.
  EXPECT_EQ(ClientFromForwardedFor("6.6.6.6, 198.51.100.4, 10.0.0.5", *set), "198.51.100.4");
  EXPECT_EQ(ClientFromForwardedFor("198.51.100.4:5555", *set), "198.51.100.4");
  EXPECT_EQ(ClientFromForwardedFor("[2001:db9::1]:443, 10.0.0.5", *set), "2001:db9::1");
  EXPECT_EQ(ClientFromForwardedFor("10.0.0.5, 10.0.0.6", *set), "");
  EXPECT_EQ(ClientFromForwardedFor("unknown, 10.0.0.5", *set), "");
  EXPECT_EQ(ClientFromForwardedFor("", *set), "");
  EXPECT_EQ(WithoutV4Mapping("::ffff:192.0.2.7"), "192.0.2.7");
  EXPECT_EQ(WithoutV4Mapping("::ffff:c000:207"), "::ffff:c000:207");
  EXPECT_EQ(WithoutV4Mapping("2001:db8::1"), "2001:db8::1");
}

// Through the interposed recv(): lws never sees the header.
TEST(ProxyProtocol, TheHeaderIsTakenOffTheStreamBeforeLwsReadsIt) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  frame_guard::ExpectProxyHeader(sv[0]);
  const std::string v2 = V2Ipv4("203.0.113.5");
  char buf[4096];
  // Half a header: nothing yet.
  ASSERT_EQ(write(sv[1], v2.data(), 10), 10);
  errno = 0;
  EXPECT_EQ(recv(sv[0], buf, sizeof(buf), 0), -1);
  EXPECT_EQ(errno, EAGAIN);
  EXPECT_EQ(frame_guard::ProxiedClient(sv[0]), nullptr);
  const std::string rest = v2.substr(10) + "GET / HTTP/1.1\r\n";
  ASSERT_EQ(write(sv[1], rest.data(), rest.size()), static_cast<ssize_t>(rest.size()));
  const ssize_t n = recv(sv[0], buf, sizeof(buf), 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "GET / HTTP/1.1\r\n");
  ASSERT_NE(frame_guard::ProxiedClient(sv[0]), nullptr);
  EXPECT_EQ(*frame_guard::ProxiedClient(sv[0]), "203.0.113.5");
  // A new socket on the same descriptor starts over.
  frame_guard::Forget(sv[0]);
  EXPECT_EQ(frame_guard::ProxiedClient(sv[0]), nullptr);
  close(sv[0]);
  close(sv[1]);
  // No header where one must be: the read fails, and keeps failing.
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  frame_guard::ExpectProxyHeader(sv[0]);
  ASSERT_EQ(write(sv[1], "GET / HTTP/1.1\r\n", 16), 16);
  errno = 0;
  EXPECT_EQ(recv(sv[0], buf, sizeof(buf), 0), -1);
  EXPECT_EQ(errno, ECONNRESET);
  EXPECT_EQ(read(sv[0], buf, sizeof(buf)), -1);
  frame_guard::Forget(sv[0]);
  close(sv[0]);
  close(sv[1]);
}

}  // namespace
}  // namespace switchboard::gateway
