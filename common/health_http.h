#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

struct lws_context;
struct lws;

namespace switchboard {

class Metrics;

// Routes libwebsockets' own log lines (errors; everything with SB_LWS_DEBUG
// set) into the process logger (common/logging.h), as "<component>.lws".
// Process-wide; after InitLogging.
void RouteLwsLogs();

// The probes' HTTP endpoints for a process that has no HTTP server of its
// own (control): GET /livez answers 200 while the process serves at all;
// GET /readyz answers 200 when `readiness()` returns "" and 503 with its
// reason otherwise. One libwebsockets context on its own thread.
class HealthHttpServer {
 public:
  // "" when ready; otherwise why not. Called on the server's thread.
  using Readiness = std::function<std::string()>;
  // `listen` is "host:port" (port 0: the OS chooses; host empty or 0.0.0.0:
  // every interface). `liveness` (optional, same contract): /livez answers
  // 503 with its reason when it returns one.
  // `metrics` (optional, outliving the server): GET /metrics answers its
  // exposition text.
  static absl::StatusOr<std::unique_ptr<HealthHttpServer>> Start(const std::string& listen, Readiness readiness,
                                                                 Readiness liveness = nullptr,
                                                                 const Metrics* metrics = nullptr);
  ~HealthHttpServer();
  int port() const { return port_; }

  // Answers a probe path: HTTP status and a one-line body (404 for any
  // other path). Any thread.
  static std::pair<int, std::string> Answer(const std::string& path, const Readiness& readiness,
                                            const Readiness& liveness = nullptr);
  // Writes a whole text/plain response from an LWS_CALLBACK_HTTP callback;
  // returns what that callback should return.
  static int Respond(struct lws* wsi, int status, const std::string& body,
                     const char* content_type = "text/plain; charset=utf-8");

 private:
  HealthHttpServer() = default;
  static int Callback(struct lws* wsi, int reason, void* user, void* in, size_t len);

  Readiness readiness_;
  Readiness liveness_;
  const Metrics* metrics_ = nullptr;
  std::string host_;
  lws_context* context_ = nullptr;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace switchboard
