#include "control/pusher_auth.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/config.h"
#include "common/crypto.h"

namespace switchboard::control {
namespace {

constexpr size_t kMaxQuery = 4096;
constexpr char kEmptyBodyMd5[] = "d41d8cd98f00b204e9800998ecf8427e";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool UrlDecode(const std::string& in, std::string* out) {
  out->clear();
  out->reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+') {
      out->push_back(' ');
    } else if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = HexValue(in[i + 1]), lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out->push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out->push_back(c);
    }
  }
  return true;
}

std::string PusherSignature(const std::string& secret, const std::string& method, const std::string& path,
                            const std::string& sorted_params) {
  return HmacSha256Hex(secret, method + "\n" + path + "\n" + sorted_params);
}

absl::Status VerifyPusherSignature(const v1::Config& config, const std::string& app_id,
                                   const std::string& expected_method, const std::string& expected_path,
                                   const HttpRequestInfo& http, absl::Time now, absl::Duration max_skew) {
  const v1::AppConfig* app = FindApp(config, app_id);
  if (app == nullptr) return absl::NotFoundError("unknown app \"" + app_id + "\"");
  if (http.raw_query.size() > kMaxQuery) return absl::InvalidArgumentError("query string too long");

  std::map<std::string, std::string> params;  // lowercased key -> decoded value
  for (absl::string_view part : absl::StrSplit(http.raw_query, '&', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    std::string key, value;
    if (!UrlDecode(kv.first, &key) || !UrlDecode(kv.second, &value)) {
      return absl::InvalidArgumentError("malformed query string");
    }
    key = absl::AsciiStrToLower(key);
    if (!params.emplace(key, value).second) return absl::InvalidArgumentError("repeated parameter " + key);
  }
  for (const char* required : {"auth_key", "auth_timestamp", "auth_version", "auth_signature"}) {
    if (params.count(required) == 0) return absl::InvalidArgumentError(std::string("missing parameter ") + required);
  }
  // Pusher's REST auth signs body_md5 for every non-empty body; Sockudo and
  // the Pusher SDKs may omit it when the body is empty.
  if (params.count("body_md5") == 0 && http.body_md5 != kEmptyBodyMd5) {
    return absl::InvalidArgumentError("missing parameter body_md5 (required for a non-empty body)");
  }

  if (params["auth_version"] != "1.0") return absl::UnauthenticatedError("auth_version must be 1.0");
  if (!ConstantTimeEquals(params["auth_key"], app->key())) {
    return absl::UnauthenticatedError("auth_key does not belong to app \"" + app_id + "\"");
  }
  int64_t ts = 0;
  if (!absl::SimpleAtoi(params["auth_timestamp"], &ts)) return absl::UnauthenticatedError("bad auth_timestamp");
  if (absl::AbsDuration(now - absl::FromUnixSeconds(ts)) > max_skew) {
    return absl::UnauthenticatedError("auth_timestamp is more than 600 s from server time");
  }
  if (http.method != expected_method || http.path != expected_path) {
    return absl::UnauthenticatedError("signature does not cover this request");
  }
  if (auto it = params.find("body_md5"); it != params.end() &&
                                         !ConstantTimeEquals(absl::AsciiStrToLower(it->second), http.body_md5)) {
    return absl::UnauthenticatedError("body_md5 does not match the body");
  }

  const std::string signature = params["auth_signature"];
  params.erase("auth_signature");
  std::string sorted = absl::StrJoin(params, "&", absl::PairFormatter("="));
  if (!ConstantTimeEquals(PusherSignature(app->secret(), http.method, http.path, sorted),
                          absl::AsciiStrToLower(signature))) {
    return absl::UnauthenticatedError("invalid signature");
  }
  return absl::OkStatus();
}

}  // namespace switchboard::control
