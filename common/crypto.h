#pragma once

#include <string>
#include <string_view>

namespace switchboard {

// Thin wrappers over OpenSSL for the signatures both binaries check.
// Stateless; any thread.

// Lowercase hex of HMAC-SHA256(key, data).
std::string HmacSha256Hex(std::string_view key, std::string_view data);
// Lowercase hex of MD5(data).
std::string Md5Hex(std::string_view data);
// Compares secrets without leaking where they differ through timing.
bool ConstantTimeEquals(std::string_view a, std::string_view b);
// Raw HMAC-SHA256(key, data): 32 bytes.
std::string HmacSha256(std::string_view key, std::string_view data);
// `n` bytes from OpenSSL's CSPRNG.
std::string RandomBytes(size_t n);

}  // namespace switchboard
