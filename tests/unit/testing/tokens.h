#pragma once

#include <jwt.h>

#include <cstdlib>
#include <memory>
#include <string>

namespace switchboard::testing {

// Signs a token with libjwt for tests. `grants_json` is the claim set.
inline std::string MakeToken(const std::string& grants_json, const std::string& secret,
                             jwt_alg_t alg = JWT_ALG_HS256) {
  jwt_t* jwt = nullptr;
  if (jwt_new(&jwt) != 0) return "";
  std::unique_ptr<jwt_t, void (*)(jwt_t*)> guard(jwt, jwt_free);
  if (jwt_add_grants_json(jwt, grants_json.c_str()) != 0) return "";
  if (alg == JWT_ALG_NONE) {
    jwt_set_alg(jwt, JWT_ALG_NONE, nullptr, 0);
  } else {
    jwt_set_alg(jwt, alg, reinterpret_cast<const unsigned char*>(secret.data()),
                static_cast<int>(secret.size()));
  }
  char* s = jwt_encode_str(jwt);
  if (s == nullptr) return "";
  std::string out(s);
  free(s);
  return out;
}

}  // namespace switchboard::testing
