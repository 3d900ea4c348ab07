#pragma once

#include <string>

#include "absl/status/status.h"
#include "spdlog/spdlog.h"

namespace switchboard {

// Sets the process-wide spdlog level ("trace".."off"). Call once from main.
absl::Status InitLogging(const std::string& level, const std::string& name);

}  // namespace switchboard
