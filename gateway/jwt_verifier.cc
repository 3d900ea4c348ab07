#include "gateway/jwt_verifier.h"

#include <jwt.h>

#include <cmath>
#include <cstdlib>
#include <memory>

#include "common/json_depth.h"
#include "nlohmann/json.hpp"

namespace switchboard::gateway {
namespace {

constexpr size_t kMaxTokenBytes = 16384;

JwtVerifier::Result Refuse(TokenError error, const std::string& why) {
  JwtVerifier::Result r;
  r.status = absl::UnauthenticatedError(why);
  r.error = error;
  return r;
}

std::string GrantJson(jwt_t* jwt, const char* name) {
  char* s = jwt_get_grants_json(jwt, name);
  if (s == nullptr) return "";
  std::string out(s);
  free(s);
  return out;
}

// A NumericDate claim: absent (ok, *out untouched), a finite number (ok), or
// anything else (false).
bool NumericDate(const nlohmann::json& claims, const char* name, absl::Time* out) {
  auto it = claims.find(name);
  if (it == claims.end()) return true;
  if (!it->is_number()) return false;
  const double v = it->get<double>();
  if (!std::isfinite(v)) return false;
  // Far past / far future stay comparable without overflow.
  if (v > 1e15) {
    *out = absl::InfiniteFuture();
  } else if (v < -1e15) {
    *out = absl::InfinitePast();
  } else {
    *out = absl::UnixEpoch() + absl::Seconds(v);
  }
  return true;
}

bool AudienceMatches(const nlohmann::json& aud, const std::string& want) {
  if (aud.is_string()) return aud.get<std::string>() == want;
  if (aud.is_array()) {
    for (const auto& a : aud) {
      if (a.is_string() && a.get<std::string>() == want) return true;
    }
  }
  return false;
}

}  // namespace

JwtVerifier::Result JwtVerifier::Verify(const std::string& token, const TokenPolicy& policy, absl::Time now) {
  if (token.empty()) return Refuse(TokenError::kInvalid, "empty token");
  if (token.size() > kMaxTokenBytes) return Refuse(TokenError::kInvalid, "token too long");
  jwt_t* raw = nullptr;
  int rc = jwt_decode(&raw, token.c_str(), reinterpret_cast<const unsigned char*>(policy.secret.data()),
                      static_cast<int>(policy.secret.size()));
  std::unique_ptr<jwt_t, void (*)(jwt_t*)> jwt(raw, jwt_free);
  if (rc != 0 || raw == nullptr) return Refuse(TokenError::kInvalid, "bad token or signature");
  if (jwt_get_alg(raw) != JWT_ALG_HS256) return Refuse(TokenError::kInvalid, "token algorithm must be HS256");

  // The whole claim set once, as JSON: libjwt reads only integer grants.
  const std::string claims_text = GrantJson(raw, nullptr);
  if (!JsonDepthWithin(claims_text)) return Refuse(TokenError::kInvalid, "claims nest too deeply");
  const nlohmann::json claims = nlohmann::json::parse(claims_text, nullptr, /*allow_exceptions=*/false);
  if (!claims.is_object()) return Refuse(TokenError::kInvalid, "claims are not a JSON object");

  Result r;
  auto sub = claims.find("sub");
  // Present but not a string is as bad as missing: user IDs are strings.
  if (sub == claims.end() || !sub->is_string()) return Refuse(TokenError::kInvalid, "token has no string sub claim");
  r.claims.sub = sub->get<std::string>();

  absl::Time exp = absl::InfiniteFuture(), nbf = absl::InfinitePast(), iat = absl::InfinitePast();
  if (!NumericDate(claims, "exp", &exp)) return Refuse(TokenError::kInvalid, "exp is not a number");
  if (!NumericDate(claims, "nbf", &nbf)) return Refuse(TokenError::kInvalid, "nbf is not a number");
  if (!NumericDate(claims, "iat", &iat)) return Refuse(TokenError::kInvalid, "iat is not a number");
  if (!policy.audience.empty()) {
    auto aud = claims.find("aud");
    if (aud == claims.end() || !AudienceMatches(*aud, policy.audience)) {
      return Refuse(TokenError::kWrongAudience, "token audience does not match");
    }
  }
  if (!policy.issuer.empty()) {
    auto iss = claims.find("iss");
    if (iss == claims.end() || !iss->is_string() || iss->get<std::string>() != policy.issuer) {
      return Refuse(TokenError::kWrongIssuer, "token issuer does not match");
    }
  }
  if (now < nbf) return Refuse(TokenError::kNotYetValid, "token not valid yet (nbf)");
  if (claims.contains("exp") && exp <= now) {
    Result expired = Refuse(TokenError::kExpired, "token expired");
    expired.claims.sub = r.claims.sub;
    return expired;
  }
  r.claims.expires_at = claims.contains("exp") ? exp : absl::InfiniteFuture();
  r.claims.info_json = GrantJson(raw, "info");
  r.claims.meta_json = GrantJson(raw, "meta");
  r.status = absl::OkStatus();
  return r;
}

}  // namespace switchboard::gateway
