#pragma once

namespace switchboard {

// Process-wide settings of the libraries, for the long-running services.
// Call once from main, before starting threads.
//
// Debian builds Abseil without NDEBUG, so every absl::Mutex::Lock checks
// lock order against a global graph (GraphCycles, under a global lock):
// 0.7% of control's samples on the UserConnections path. Release builds
// turn that check off; the sanitizer build keeps it, and it aborts on a
// lock-order cycle there.
void TuneRuntime();

}  // namespace switchboard
