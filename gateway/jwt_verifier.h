#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace switchboard::gateway {

struct TokenClaims {
  std::string sub;
  // When the token stops being valid; InfiniteFuture() if it has no `exp`.
  absl::Time expires_at = absl::InfiniteFuture();
  std::string info_json;  // "" if absent
  std::string meta_json;  // "" if absent; kept server-side only
};

// Why a token was refused; the client protocol maps each to its own code
// (Centrifugo: kExpired -> error 109 at connect / 3005, the rest -> 3500).
enum class TokenError { kInvalid, kExpired, kNotYetValid, kWrongAudience, kWrongIssuer };

// What a token must satisfy besides its signature.
struct TokenPolicy {
  std::string secret;    // HS256 key
  std::string audience;  // "" = `aud` not checked
  std::string issuer;    // "" = `iss` not checked
};

// Verifies an HS256 connection token with libjwt. Only HS256 is accepted
// (a token signed with another algorithm, or unsigned, is invalid). `sub`
// must be a string; it may be empty for an anonymous connection, as in
// Centrifugo. `exp`, `nbf` and `iat` are NumericDates (RFC 7519): JSON
// numbers, integer or not; any other type makes the token invalid.
// Stateless and thread-safe.
class JwtVerifier {
 public:
  struct Result {
    absl::Status status;  // ok, or the reason
    TokenError error = TokenError::kInvalid;
    TokenClaims claims;
  };
  static Result Verify(const std::string& token, const TokenPolicy& policy, absl::Time now);
};

}  // namespace switchboard::gateway
