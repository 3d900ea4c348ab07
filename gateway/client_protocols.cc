// The one place that knows every client protocol.
#include "gateway/centrifuge_protocol.h"
#include "gateway/client_protocol.h"
#include "gateway/pusher_protocol.h"
#include "common/version.h"

namespace switchboard::gateway {

const std::string& ServerVersion() {
  static const std::string* const v = new std::string(std::string("switchboard ") + kVersion);
  return *v;
}

ProtocolPtr MakeClientProtocol(Wire wire) {
  // Centrifugo's protocols keep nothing per connection: one instance each.
  static CentrifugeJsonProtocol* const json = new CentrifugeJsonProtocol();
  static CentrifugeProtobufProtocol* const protobuf = new CentrifugeProtobufProtocol();
  static CentrifugeUniStreamProtocol* const uni = new CentrifugeUniStreamProtocol();
  switch (wire) {
    case Wire::kCentrifugeProtobuf:
      return ProtocolPtr(protobuf);
    case Wire::kUniHttpStream:
      return ProtocolPtr(uni);
    case Wire::kPusher:
      return ProtocolPtr(new PusherProtocol());
    case Wire::kCentrifugeJson:
      break;
  }
  return ProtocolPtr(json);
}

std::string SafeUtf8(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  size_t i = 0;
  while (i < in.size()) {
    const auto c = static_cast<unsigned char>(in[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= in.size();
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(in[i + k]);
      ok = (cc >> 6) == 0x2;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // No overlong forms, surrogates or code points past U+10FFFF.
    ok = ok && !(len == 2 && cp < 0x80) && !(len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) &&
         !(len == 4 && (cp < 0x10000 || cp > 0x10FFFF));
    if (ok) {
      out.append(in, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

}  // namespace switchboard::gateway
