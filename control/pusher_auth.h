#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "switchboard/v1/config.pb.h"

namespace switchboard::control {

// What the HTTP proxy saw of the request, forwarded as gRPC metadata. The
// proxy holds no secrets; control checks the signature.
struct HttpRequestInfo {
  std::string method;     // "POST"
  std::string path;       // "/apps/demo/users/42/terminate_connections"
  std::string raw_query;  // "auth_key=...&auth_timestamp=...&..."
  std::string body_md5;   // hex MD5 of the raw body ("" body: d41d8cd98f00b204e9800998ecf8427e)
};

// Metadata keys the proxy sets (and strips from what clients send).
inline constexpr char kHttpMethodKey[] = "x-switchboard-http-method";
inline constexpr char kHttpPathKey[] = "x-switchboard-http-path";
inline constexpr char kHttpQueryKey[] = "x-switchboard-http-query";
inline constexpr char kHttpBodyMd5Key[] = "x-switchboard-http-body-md5";
// The HTTP client's address as switchboard-http saw it (for the audit trail;
// believed only from switchboard-http, like the rest).
inline constexpr char kHttpClientKey[] = "x-switchboard-http-client";

// Verifies a Pusher Channels REST API signature (auth_version 1.0) for a call
// on `app_id` whose HTTP form is `expected_method expected_path`:
//   auth_signature = hex HMAC-SHA256(app secret,
//       METHOD "\n" PATH "\n" sorted "k=v&..." of the other parameters)
// with keys lowercased and sorted, values not URL-escaped. The key must belong
// to `app_id` (a signature for one app never authorizes another), the
// timestamp must be within `max_skew` of `now`, body_md5 must match the body.
// INVALID_ARGUMENT for a missing or repeated parameter, NOT_FOUND for an
// unknown app, UNAUTHENTICATED for everything else. Thread-safe.
absl::Status VerifyPusherSignature(const v1::Config& config, const std::string& app_id,
                                   const std::string& expected_method, const std::string& expected_path,
                                   const HttpRequestInfo& http, absl::Time now,
                                   absl::Duration max_skew = absl::Seconds(600));

// The signature a client computes (exposed for `switchboardctl sign` and tests).
std::string PusherSignature(const std::string& secret, const std::string& method, const std::string& path,
                            const std::string& sorted_params);

// Percent-decodes a query component ('+' is a space). False on a bad escape.
bool UrlDecode(const std::string& in, std::string* out);

}  // namespace switchboard::control
