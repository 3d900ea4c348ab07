// libFuzzer target: Pusher-style REST signatures as control checks them for
// switchboard-http (query parsing, URL decoding, body_md5, timestamp, HMAC).
// First byte: even = the rest is "METHOD\nPATH\nRAW_QUERY\nBODY_MD5" as sent;
// odd = the rest is "RAW_QUERY_WITHOUT_SIGNATURE\nBODY" which the harness signs
// with the app secret (so the checks after the signature run too).
#include <algorithm>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/crypto.h"
#include "control/pusher_auth.h"
#include "tests/fuzz/fuzz_hub.h"

using namespace switchboard;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const v1::Config config = fuzz::FuzzConfig();
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  const std::string path = "/apps/demo/users/42/terminate_connections";
  control::HttpRequestInfo http;
  if ((data[0] & 1) == 0) {
    std::vector<std::string> parts = absl::StrSplit(rest, absl::MaxSplits('\n', 3));
    parts.resize(4);
    http = {parts[0], parts[1], parts[2], parts[3]};
  } else {
    std::vector<std::string> parts = absl::StrSplit(rest, absl::MaxSplits('\n', 1));
    parts.resize(2);
    // Pusher's algorithm: sign the sorted "key=value" pairs as sent.
    std::vector<std::string> pairs = absl::StrSplit(parts[0], '&', absl::SkipEmpty());
    std::sort(pairs.begin(), pairs.end());
    const std::string sorted = absl::StrJoin(pairs, "&");
    http.method = "POST";
    http.path = path;
    http.body_md5 = Md5Hex(parts[1]);
    http.raw_query = sorted + "&auth_signature=" + control::PusherSignature(fuzz::kSecret, "POST", path, sorted);
  }
  (void)control::VerifyPusherSignature(config, "demo", "POST", path, http, now);
  (void)control::VerifyPusherSignature(config, "nope", "GET", "/apps/nope/users/1/connections", http, now);
  std::string decoded;
  (void)control::UrlDecode(http.raw_query, &decoded);
  return 0;
}
