#pragma once

#include <cstdint>
#include <string>

namespace switchboard {

// Random UUIDv4 text, as Centrifugo uses for client IDs. Thread-safe.
std::string NewUuid();

// Milliseconds since the Unix epoch.
int64_t NowUnixMs();

}  // namespace switchboard
