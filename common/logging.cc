#include "common/logging.h"

#include "spdlog/sinks/stdout_color_sinks.h"

namespace switchboard {

absl::Status InitLogging(const std::string& level, const std::string& name) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError("unknown log level: " + level);
  }
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(lvl);
  return absl::OkStatus();
}

}  // namespace switchboard
