#pragma once

namespace switchboard {

// The one version of every binary: scripts/version.sh (CMake's project
// version, and git describe in a checkout), generated into version.cc.
extern const char kVersion[];

}  // namespace switchboard
