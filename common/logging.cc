#include "common/logging.h"

#include <grpc/support/log.h>

#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace switchboard {
namespace {

thread_local const nlohmann::ordered_json* t_fields = nullptr;
bool g_json = false;
// Never destroyed: gRPC may log from its own threads while the process exits.
spdlog::logger* g_grpc_logger = nullptr;

std::string UtcTimestamp(spdlog::log_clock::time_point tp) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromChrono(tp), absl::UTCTimeZone());
}

std::string AsText(const nlohmann::ordered_json& v) {
  return v.is_string() ? v.get<std::string>()
                       : v.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// Both formats as one spdlog formatter: a line per message, UTC.
class LineFormatter final : public spdlog::formatter {
 public:
  explicit LineFormatter(bool json) : json_(json) {}
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const absl::string_view payload(msg.payload.data(), msg.payload.size());
    const absl::string_view level = spdlog::level::to_string_view(msg.level).data();
    std::string line;
    if (json_) {
      nlohmann::ordered_json j;
      j["ts"] = UtcTimestamp(msg.time);
      j["level"] = std::string(level);
      j["component"] = std::string(msg.logger_name.data(), msg.logger_name.size());
      j["msg"] = std::string(payload);
      if (t_fields != nullptr) {
        for (const auto& [k, v] : t_fields->items()) j[k] = v;
      }
      line = j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    } else {
      line = absl::StrCat(UtcTimestamp(msg.time), " ", level, " [",
                          absl::string_view(msg.logger_name.data(), msg.logger_name.size()), "] ", payload);
      if (t_fields != nullptr) {
        for (const auto& [k, v] : t_fields->items()) {
          if (k == "audit") continue;  // already the message
          absl::StrAppend(&line, " ", k, "=", AsText(v));
        }
      }
    }
    line.push_back('\n');
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<LineFormatter>(json_); }

 private:
  const bool json_;
};

spdlog::level::level_enum GrpcLevel(gpr_log_severity s) {
  switch (s) {
    case GPR_LOG_SEVERITY_DEBUG: return spdlog::level::debug;
    case GPR_LOG_SEVERITY_INFO: return spdlog::level::info;
    default: return spdlog::level::err;
  }
}

}  // namespace

absl::Status InitLogging(const std::string& level, const std::string& component, const std::string& format) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError("unknown log level: " + level + " (trace|debug|info|warn|error|off)");
  }
  if (format != "text" && format != "json") {
    return absl::InvalidArgumentError("unknown log format: " + format + " (text|json)");
  }
  g_json = format == "json";
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  sink->set_formatter(std::make_unique<LineFormatter>(g_json));
  auto logger = std::make_shared<spdlog::logger>(component, sink);
  spdlog::set_default_logger(logger);
  spdlog::set_level(lvl);
  // gRPC's and libwebsockets' own lines: the same sink, their own component.
  g_grpc_logger = new spdlog::logger(component + ".grpc", sink);  // NOLINT: deliberately never freed
  g_grpc_logger->set_level(lvl);
  spdlog::register_logger(std::make_shared<spdlog::logger>(component + ".lws", sink));
  spdlog::get(component + ".lws")->set_level(lvl);
  return absl::OkStatus();
}

void RouteGrpcLogs() {
  gpr_set_log_function([](gpr_log_func_args* args) {
    if (g_grpc_logger == nullptr) return;
    const char* file = args->file != nullptr ? std::strrchr(args->file, '/') : nullptr;
    g_grpc_logger->log(GrpcLevel(args->severity), "{} ({}:{})", args->message != nullptr ? args->message : "",
                       file != nullptr ? file + 1 : (args->file != nullptr ? args->file : "?"), args->line);
  });
}

ScopedLogFields::ScopedLogFields(nlohmann::ordered_json fields) : previous_(t_fields), fields_(std::move(fields)) {
  if (previous_ != nullptr) {
    nlohmann::ordered_json merged = *previous_;
    for (auto& [k, v] : fields_.items()) merged[k] = v;
    fields_ = std::move(merged);
  }
  t_fields = &fields_;
}

ScopedLogFields::~ScopedLogFields() { t_fields = previous_; }

void LogAudit(const nlohmann::ordered_json& record) {
  if (g_json) {
    ScopedLogFields fields(nlohmann::ordered_json{{"audit", record}});
    spdlog::info("audit");
  } else {
    spdlog::info("audit {}", record.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
  }
}

bool LogLimiter::Allow(uint64_t* dropped) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  if (now - window_start_ >= period_) {
    window_start_ = now;
    in_window_ = 0;
  }
  if (in_window_ >= burst_) {
    ++dropped_;
    return false;
  }
  ++in_window_;
  *dropped = dropped_;
  dropped_ = 0;
  return true;
}

}  // namespace switchboard
