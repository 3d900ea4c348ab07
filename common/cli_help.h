#pragma once

// What every binary's command line shares: --version and --help as the
// programs print them (abseil's flags, the program's own listed).

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/version.h"

namespace switchboard {

// --version prints "<program> <version>"; abseil's --help lists the flags
// defined in the program's own sources (files under one of `dirs`), not
// "No flags matched", under repository paths. Before absl::ParseCommandLine.
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

// One flag as help shows it: "  --name=DEFAULT  help".
inline std::string FlagHelpLine(const absl::CommandLineFlag& f) {
  std::string def = f.DefaultValue();
  return absl::StrCat("  --", f.Name(), def.empty() ? "" : absl::StrCat(" (default ", def, ")"), "\n      ",
                      f.Help(), "\n");
}

// True if argv asks for help (--help, -help, -h, --h, help), as abseil
// would not: the program's usage and its own flags (defined in a file under
// one of `dirs`) on stdout, and exit status 0 (abseil's --help exits 1).
inline bool IsHelpArg(const char* a) {
  const std::string s = a;
  return s == "--help" || s == "-help" || s == "-h" || s == "--h" || s == "--helpshort" || s == "-helpshort";
}

inline void PrintProgramHelp(const std::vector<std::string>& dirs) {
  std::printf("%s\n\nFlags:\n", std::string(absl::ProgramUsageMessage()).c_str());
  std::map<std::string, const absl::CommandLineFlag*> mine;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    for (const auto& d : dirs) {
      if (absl::StrContains(flag->Filename(), d)) mine[std::string(name)] = flag;
    }
  }
  for (const auto& [name, flag] : mine) std::printf("%s", FlagHelpLine(*flag).c_str());
  std::printf("  --version\n      print the version and exit\n");
}

inline void HandleHelp(int argc, char** argv, const std::vector<std::string>& dirs) {
  for (int i = 1; i < argc; ++i) {
    if (IsHelpArg(argv[i])) {
      PrintProgramHelp(dirs);
      std::exit(0);
    }
  }
}

}  // namespace switchboard
