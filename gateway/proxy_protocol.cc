#include "gateway/proxy_protocol.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace switchboard::gateway {
namespace {

constexpr uint8_t kV2Signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr char kV1Prefix[] = "PROXY ";
constexpr size_t kV1Max = 107;  // the spec's bound, CRLF included

bool ValidIp(const std::string& s, int family) {
  uint8_t buf[16];
  return inet_pton(family, s.c_str(), buf) == 1;
}

ProxyParse Invalid(std::string* why, std::string what) {
  *why = std::move(what);
  return ProxyParse::kInvalid;
}

ProxyParse ParseV1(const uint8_t* data, size_t n, ProxyHeader* out, std::string* why) {
  const char* s = reinterpret_cast<const char*>(data);
  const void* lf = std::memchr(s, '\n', std::min(n, kV1Max));
  if (lf == nullptr) {
    if (n >= kV1Max) return Invalid(why, "PROXY v1 line longer than 107 bytes");
    return ProxyParse::kIncomplete;
  }
  const size_t len = static_cast<size_t>(static_cast<const char*>(lf) - s) + 1;
  if (len < 2 || s[len - 2] != '\r') return Invalid(why, "PROXY v1 line does not end with CRLF");
  const std::vector<std::string> parts = absl::StrSplit(std::string(s, len - 2), ' ');
  out->length = len;
  if (parts.size() >= 2 && parts[1] == "UNKNOWN") {
    out->client_ip.clear();
    return ProxyParse::kDone;
  }
  if (parts.size() != 6 || (parts[1] != "TCP4" && parts[1] != "TCP6")) {
    return Invalid(why, "PROXY v1 line is not 'PROXY TCP4|TCP6 src dst sport dport'");
  }
  const int family = parts[1] == "TCP4" ? AF_INET : AF_INET6;
  uint32_t port;
  if (!ValidIp(parts[2], family) || !ValidIp(parts[3], family) || !absl::SimpleAtoi(parts[4], &port) ||
      port > 65535 || !absl::SimpleAtoi(parts[5], &port) || port > 65535) {
    return Invalid(why, "PROXY v1 line has a bad address or port");
  }
  out->client_ip = parts[2];
  return ProxyParse::kDone;
}

ProxyParse ParseV2(const uint8_t* data, size_t n, ProxyHeader* out, std::string* why) {
  if (n < 16) return ProxyParse::kIncomplete;
  const uint8_t ver_cmd = data[12];
  if ((ver_cmd >> 4) != 2) return Invalid(why, "PROXY v2 header with a version other than 2");
  const uint8_t cmd = ver_cmd & 0x0F;
  if (cmd > 1) return Invalid(why, "PROXY v2 header with an unknown command");
  const size_t body = (size_t{data[14]} << 8) | data[15];
  if (16 + body > kMaxProxyHeaderBytes) return Invalid(why, "PROXY v2 header too long");
  if (n < 16 + body) return ProxyParse::kIncomplete;
  out->length = 16 + body;
  out->client_ip.clear();
  if (cmd == 0) return ProxyParse::kDone;  // LOCAL: the proxy's own connection
  const uint8_t family = data[13] >> 4;
  const uint8_t transport = data[13] & 0x0F;
  char text[INET6_ADDRSTRLEN] = {0};
  if (family == 0x1 && transport == 0x1) {  // TCP over IPv4: src, dst, sport, dport
    if (body < 12) return Invalid(why, "PROXY v2 IPv4 block shorter than 12 bytes");
    inet_ntop(AF_INET, data + 16, text, sizeof(text));
  } else if (family == 0x2 && transport == 0x1) {
    if (body < 36) return Invalid(why, "PROXY v2 IPv6 block shorter than 36 bytes");
    inet_ntop(AF_INET6, data + 16, text, sizeof(text));
  } else if (family == 0x0) {
    return ProxyParse::kDone;  // UNSPEC: address unknown, the proxy's
  } else {
    return Invalid(why, "PROXY v2 header for a transport other than TCP over IPv4/IPv6");
  }
  out->client_ip = WithoutV4Mapping(text);
  return ProxyParse::kDone;
}

}  // namespace

std::string WithoutV4Mapping(std::string ip) {
  if (ip.rfind("::ffff:", 0) == 0 && ip.find('.') != std::string::npos) ip.erase(0, 7);
  return ip;
}

ProxyParse ParseProxyHeader(const uint8_t* data, size_t n, ProxyHeader* out, std::string* why) {
  if (n == 0) return ProxyParse::kIncomplete;
  if (data[0] == kV2Signature[0]) {
    const size_t k = std::min(n, sizeof(kV2Signature));
    if (std::memcmp(data, kV2Signature, k) != 0) return Invalid(why, "not a PROXY header");
    if (n < sizeof(kV2Signature)) return ProxyParse::kIncomplete;
    return ParseV2(data, n, out, why);
  }
  const size_t k = std::min(n, sizeof(kV1Prefix) - 1);
  if (std::memcmp(data, kV1Prefix, k) != 0) return Invalid(why, "not a PROXY header");
  if (n < sizeof(kV1Prefix) - 1) return ProxyParse::kIncomplete;
  return ParseV1(data, n, out, why);
}

absl::StatusOr<CidrSet> CidrSet::Parse(const std::vector<std::string>& cidrs) {
  CidrSet set;
  for (const std::string& c : cidrs) {
    const size_t slash = c.find('/');
    const std::string addr = c.substr(0, slash);
    Net net{};
    if (inet_pton(AF_INET, addr.c_str(), net.addr) == 1) {
      net.family = AF_INET;
      net.prefix = 32;
    } else if (inet_pton(AF_INET6, addr.c_str(), net.addr) == 1) {
      net.family = AF_INET6;
      net.prefix = 128;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("'", c, "' is not an address or CIDR"));
    }
    if (slash != std::string::npos) {
      int prefix;
      if (!absl::SimpleAtoi(c.substr(slash + 1), &prefix) || prefix < 0 || prefix > net.prefix) {
        return absl::InvalidArgumentError(absl::StrCat("'", c, "' has a bad prefix length"));
      }
      net.prefix = prefix;
    }
    set.nets_.push_back(net);
  }
  return set;
}

bool CidrSet::Contains(const std::string& ip) const {
  uint8_t a[16];
  int family;
  if (inet_pton(AF_INET, ip.c_str(), a) == 1) {
    family = AF_INET;
  } else if (inet_pton(AF_INET6, ip.c_str(), a) == 1) {
    family = AF_INET6;
  } else {
    return false;
  }
  for (const Net& net : nets_) {
    if (net.family != family) continue;
    const int full = net.prefix / 8, rest = net.prefix % 8;
    if (std::memcmp(a, net.addr, static_cast<size_t>(full)) != 0) continue;
    if (rest != 0) {
      const uint8_t mask = static_cast<uint8_t>(0xFF << (8 - rest));
      if ((a[full] & mask) != (net.addr[full] & mask)) continue;
    }
    return true;
  }
  return false;
}

std::string ClientFromForwardedFor(const std::string& header, const CidrSet& trusted) {
  std::vector<std::string> hops = absl::StrSplit(header, ',');
  for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
    std::string hop(absl::StripAsciiWhitespace(*it));
    // "[v6]:port" and "v4:port" forms: the address alone.
    if (!hop.empty() && hop.front() == '[') {
      const size_t close = hop.find(']');
      hop = close == std::string::npos ? "" : hop.substr(1, close - 1);
    } else if (std::count(hop.begin(), hop.end(), ':') == 1) {
      hop = hop.substr(0, hop.find(':'));
    }
    uint8_t buf[16];
    if (inet_pton(AF_INET, hop.c_str(), buf) != 1 && inet_pton(AF_INET6, hop.c_str(), buf) != 1) return "";
    if (!trusted.Contains(hop)) return hop;
  }
  return "";
}

}  // namespace switchboard::gateway
