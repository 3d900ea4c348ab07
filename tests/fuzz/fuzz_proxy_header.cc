// libFuzzer target: the PROXY protocol header parser
// (gateway/proxy_protocol.h) and X-Forwarded-For. First byte: how many bytes
// of the rest are the header input (the parse must say the same whole or
// cut at any point before its end); the rest is also an X-Forwarded-For.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "gateway/proxy_protocol.h"

using namespace switchboard::gateway;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  ++data;
  --size;
  ProxyHeader whole;
  std::string why;
  const ProxyParse r = ParseProxyHeader(data, size, &whole, &why);
  if (r == ProxyParse::kDone) {
    if (whole.length == 0 || whole.length > size || whole.length > kMaxProxyHeaderBytes) abort();
    // Any prefix of a whole header is incomplete, never something else.
    for (size_t n = 0; n < whole.length; ++n) {
      ProxyHeader h;
      if (ParseProxyHeader(data, n, &h, &why) != ProxyParse::kIncomplete) abort();
    }
  }
  if (r == ProxyParse::kInvalid && why.empty()) abort();
  static const auto* trusted = new CidrSet(*CidrSet::Parse({"10.0.0.0/8", "2001:db8::/32"}));
  const std::string client = ClientFromForwardedFor(std::string(reinterpret_cast<const char*>(data), size), *trusted);
  if (!client.empty() && trusted->Contains(client)) abort();
  return 0;
}
