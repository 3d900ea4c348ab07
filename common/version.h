#pragma once

#include <string>
#include <vector>

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace switchboard {

// The one version of every binary (CMake's project version).
inline constexpr char kVersion[] = SWITCHBOARD_VERSION;

// --version prints "<program> <version>"; --help lists the flags defined in
// the program's own sources (files under one of `dirs`), not abseil's "No
// flags matched". Before absl::ParseCommandLine.
inline void SetFlagsUsage(const std::string& program, std::vector<std::string> dirs) {
  absl::FlagsUsageConfig config;
  config.version_string = [program] { return absl::StrCat(program, " ", kVersion, "\n"); };
  config.contains_help_flags = [dirs](absl::string_view file) {
    for (const auto& d : dirs) {
      if (absl::StrContains(file, d)) return true;
    }
    return false;
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  // "gateway/main.cc", not the build machine's path to it.
  config.normalize_filename = [dirs](absl::string_view file) -> std::string {
    for (const auto& d : dirs) {
      if (size_t at = file.find(d); at != absl::string_view::npos) return std::string(file.substr(at));
    }
    return std::string(file);
  };
  absl::SetFlagsUsageConfig(config);
}

}  // namespace switchboard
