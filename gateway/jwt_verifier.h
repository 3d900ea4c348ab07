#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace switchboard::gateway {

struct TokenClaims {
  std::string sub;
  int64_t exp = 0;        // unix seconds, 0 = never expires
  std::string info_json;  // "" if absent
  std::string meta_json;  // "" if absent; kept server-side only
};

enum class TokenError { kInvalid, kExpired };

// Verifies an HS256 connection token with libjwt. Only HS256 is accepted
// (a token signed with another algorithm, or unsigned, is invalid). `sub`
// must be a string; it may be empty for an anonymous connection, as in
// Centrifugo. Stateless and thread-safe.
class JwtVerifier {
 public:
  struct Result {
    absl::Status status;  // ok, or the reason
    TokenError error = TokenError::kInvalid;
    TokenClaims claims;
  };
  static Result Verify(const std::string& token, const std::string& secret, absl::Time now);
};

}  // namespace switchboard::gateway
