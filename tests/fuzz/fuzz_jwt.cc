// libFuzzer target: connection token verification. First byte: even = the
// rest is a token as a client sends it; odd = the rest is a claim set that
// the harness signs with the app secret, so the claim checks (exp/nbf/iat as
// any JSON number, aud string or array, iss, sub) see valid signatures.
#include <jwt.h>

#include <cstdlib>
#include <memory>

#include "gateway/jwt_verifier.h"
#include "tests/fuzz/fuzz_hub.h"

using namespace switchboard;

namespace {

std::string Sign(const std::string& claims) {
  jwt_t* jwt = nullptr;
  if (jwt_new(&jwt) != 0) return "";
  std::unique_ptr<jwt_t, void (*)(jwt_t*)> guard(jwt, jwt_free);
  if (jwt_add_grants_json(jwt, claims.c_str()) != 0) return "";
  jwt_set_alg(jwt, JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(fuzz::kSecret),
              static_cast<int>(sizeof(fuzz::kSecret) - 1));
  char* s = jwt_encode_str(jwt);
  if (s == nullptr) return "";
  std::string out(s);
  free(s);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] & 1) {
    if (rest.find('\0') != std::string::npos) return 0;
    rest = Sign(rest);
    if (rest.empty()) return 0;
  }
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  for (const gateway::TokenPolicy& policy :
       {gateway::TokenPolicy{fuzz::kSecret, "", ""}, gateway::TokenPolicy{fuzz::kSecret, "chat", "auth"}}) {
    auto r = gateway::JwtVerifier::Verify(rest, policy, now);
    // A token accepted as valid never expired before now.
    if (r.status.ok() && r.claims.expires_at <= now) __builtin_trap();
  }
  return 0;
}
