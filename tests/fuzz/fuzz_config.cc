// libFuzzer target: the YAML configuration loader and validator (both
// binaries read it at start; bad config must be one clear error, never a
// crash). Environment references resolve against a fixed environment.
#include <cstdlib>

#include "common/config.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("FUZZ_SECRET", "fuzz-secret-from-env", 1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = switchboard::ParseConfig(text);
  if (!config.ok()) {
    if (config.status().message().empty()) __builtin_trap();  // every error says what is wrong
    return 0;
  }
  (void)switchboard::ValidateConfig(*config);
  return 0;
}
