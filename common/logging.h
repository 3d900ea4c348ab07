#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace switchboard {

// One logger per process, on stderr, in one of two formats (--log_format):
//   text: 2026-12-07T08:10:02.123Z info [gateway] message request_id=...
//   json: {"ts":"2026-12-07T08:10:02.123Z","level":"info","component":"gateway","msg":"message",...}
// one object per line, UTC, with the request ID and any fields in scope
// (ScopedLogFields). libwebsockets' and gRPC's own lines go through it too
// (components "<name>.lws" and "<name>.grpc"). Call once from main.
absl::Status InitLogging(const std::string& level, const std::string& component,
                         const std::string& format = "text");

// Routes gRPC's own log lines (gpr_log) into the process logger.
void RouteGrpcLogs();

// Fields added to every line logged on this thread while in scope (the
// request ID of the call being handled, say). Nestable.
class ScopedLogFields {
 public:
  explicit ScopedLogFields(nlohmann::ordered_json fields);
  ScopedLogFields(const ScopedLogFields&) = delete;
  ScopedLogFields& operator=(const ScopedLogFields&) = delete;
  ~ScopedLogFields();

 private:
  const nlohmann::ordered_json* previous_;
  nlohmann::ordered_json fields_;
};

// Logs a structured record (an audit record: who did what to whom, and how
// it went): in json, the record's fields under "audit" in the line's object;
// in text, the message "audit" followed by the record as JSON. Any thread.
void LogAudit(const nlohmann::ordered_json& record);

// At most `burst` lines per `period` from one call site (per-connection
// warnings: a flood of bad clients must not flood the log or stall the
// loop); the first line let through after some were dropped says how many.
// Thread-safe.
class LogLimiter {
 public:
  LogLimiter(uint32_t burst, absl::Duration period) : burst_(burst), period_(period) {}
  // True when this line may be logged; `dropped` is then the number of lines
  // held back since the last one let through.
  bool Allow(uint64_t* dropped);

 private:
  const uint32_t burst_;
  const absl::Duration period_;
  absl::Mutex mu_;
  absl::Time window_start_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint32_t in_window_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace switchboard
