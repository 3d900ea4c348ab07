#include "common/answer_mac.h"

#include "common/crypto.h"

namespace switchboard {
namespace {
// BusReply.mac is field 9, length-delimited: tag (9 << 3) | 2, then a
// one-byte length, then the 32 bytes.
constexpr char kMacTag = static_cast<char>((9 << 3) | 2);
constexpr size_t kTrailerBytes = 2 + kAnswerKeyBytes;
}  // namespace

std::string NewAnswerKey() { return RandomBytes(kAnswerKeyBytes); }

std::string SignAnswer(std::string_view key, std::string body) {
  const std::string mac = HmacSha256(key, body);
  body.reserve(body.size() + kTrailerBytes);
  body.push_back(kMacTag);
  body.push_back(static_cast<char>(kAnswerKeyBytes));
  body.append(mac);
  return body;
}

bool SplitSignedAnswer(std::string_view data, std::string_view* body, std::string_view* mac) {
  *body = {};
  *mac = {};
  if (data.size() < kTrailerBytes) return false;
  const size_t at = data.size() - kTrailerBytes;
  if (data[at] != kMacTag || data[at + 1] != static_cast<char>(kAnswerKeyBytes)) return false;
  *body = data.substr(0, at);
  *mac = data.substr(at + 2);
  return true;
}

bool AnswerMacValid(std::string_view key, std::string_view body, std::string_view mac) {
  return !key.empty() && mac.size() == kAnswerKeyBytes && ConstantTimeEquals(HmacSha256(key, body), mac);
}

}  // namespace switchboard
