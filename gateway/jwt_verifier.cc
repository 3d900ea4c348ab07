#include "gateway/jwt_verifier.h"

#include <jwt.h>

#include <cerrno>
#include <cstdlib>
#include <memory>

namespace switchboard::gateway {
namespace {

JwtVerifier::Result Invalid(const std::string& why) {
  JwtVerifier::Result r;
  r.status = absl::UnauthenticatedError(why);
  r.error = TokenError::kInvalid;
  return r;
}

std::string GrantJson(jwt_t* jwt, const char* name) {
  char* s = jwt_get_grants_json(jwt, name);
  if (s == nullptr) return "";
  std::string out(s);
  free(s);
  return out;
}

}  // namespace

JwtVerifier::Result JwtVerifier::Verify(const std::string& token, const std::string& secret,
                                        absl::Time now) {
  if (token.empty()) return Invalid("empty token");
  if (token.size() > 16384) return Invalid("token too long");
  jwt_t* raw = nullptr;
  int rc = jwt_decode(&raw, token.c_str(), reinterpret_cast<const unsigned char*>(secret.data()),
                      static_cast<int>(secret.size()));
  std::unique_ptr<jwt_t, void (*)(jwt_t*)> jwt(raw, jwt_free);
  if (rc != 0 || raw == nullptr) return Invalid("bad token or signature");
  if (jwt_get_alg(raw) != JWT_ALG_HS256) return Invalid("token algorithm must be HS256");

  Result r;
  errno = 0;
  const char* sub = jwt_get_grant(raw, "sub");
  if (sub == nullptr) {
    // Present but not a string is as bad as missing: user IDs are strings.
    return Invalid("token has no string sub claim");
  }
  r.claims.sub = sub;
  errno = 0;
  long exp = jwt_get_grant_int(raw, "exp");
  if (errno == 0) {
    r.claims.exp = exp;
    if (exp <= absl::ToUnixSeconds(now)) {
      r.status = absl::UnauthenticatedError("token expired");
      r.error = TokenError::kExpired;
      return r;
    }
  }
  r.claims.info_json = GrantJson(raw, "info");
  r.claims.meta_json = GrantJson(raw, "meta");
  r.status = absl::OkStatus();
  return r;
}

}  // namespace switchboard::gateway
