#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace switchboard::gateway {

// The PROXY protocol (haproxy's spec, versions 1 and 2), as load balancers
// (AWS NLB, haproxy's send-proxy[-v2]) put it before a connection's first
// byte: who the client is. Pure parsing, no sockets.
struct ProxyHeader {
  size_t length = 0;      // bytes of header, to strip from the stream
  std::string client_ip;  // "" for LOCAL (v2) / UNKNOWN (v1): the proxy's own connection (health checks)
};

enum class ProxyParse { kIncomplete, kDone, kInvalid };

// Parses the header at the start of `data`. kIncomplete: more bytes may make
// it whole (at most 16 + 65535 for v2; this accepts at most kMaxHeaderBytes);
// kInvalid: not a PROXY header or malformed (`why` says what).
ProxyParse ParseProxyHeader(const uint8_t* data, size_t n, ProxyHeader* out, std::string* why);
inline constexpr size_t kMaxProxyHeaderBytes = 536;  // v2: 16 + addresses + TLVs we allow; v1: 107

// "::ffff:192.0.2.7" (an IPv4 peer on a dual-stack socket) as "192.0.2.7";
// any other address as it is.
std::string WithoutV4Mapping(std::string ip);

// "10.0.0.0/8", "2001:db8::/32", or a plain address (one host).
class CidrSet {
 public:
  static absl::StatusOr<CidrSet> Parse(const std::vector<std::string>& cidrs);
  bool Contains(const std::string& ip) const;
  bool empty() const { return nets_.empty(); }

 private:
  struct Net {
    int family;          // AF_INET or AF_INET6
    uint8_t addr[16];
    int prefix;
  };
  std::vector<Net> nets_;
};

// The client of an HTTP request that came through trusted proxies: the
// rightmost X-Forwarded-For entry that is not itself a trusted proxy (the
// entries left of it are the client's to write, and may lie). "" when the
// header names no address, or only trusted ones.
std::string ClientFromForwardedFor(const std::string& header, const CidrSet& trusted);

}  // namespace switchboard::gateway
