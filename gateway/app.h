#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/health_http.h"
#include "common/metrics.h"
#include "common/nats_client_impl.h"
#include "gateway/answer_keys.h"
#include "gateway/bus_handler.h"
#include "gateway/control_link_set.h"
#include "gateway/drain.h"
#include "gateway/hub.h"
#include "gateway/presence_announcer.h"
#include "gateway/ws_server.h"
#include "switchboard/v1/config.pb.h"

namespace switchboard::gateway {

// The gateway's composition root: builds every part from the config and
// owns them, in one place and one order (create → start → run → drain →
// stop). main() reads flags and signals and calls these; the drain's policy
// lives in drain.h (tested with a fake clock), this class is its real target.
class GatewayApp final : public DrainTarget {
 public:
  struct Options {
    std::string gateway_id;  // "": hostname-port
    std::string version;
    bool reuse_port = false;
    uint64_t descriptor_limit = 0;  // RLIMIT_NOFILE (0: unknown): caps sockets below it
    DrainPlan drain;
    // Testing only: an older or newer bus format, unsigned answers.
    uint32_t testing_bus_format_version = 0;
    bool testing_unsigned_answers = false;
  };

  // Every part built and listening; nothing attached yet. InvalidArgument:
  // the config is wrong (exit 2); other errors: the environment (exit 1).
  static absl::StatusOr<std::unique_ptr<GatewayApp>> Create(v1::Config config, const Options& options);
  ~GatewayApp() override;

  // Joins the fleet: the bus subscriptions, presence, the control links.
  absl::Status Start();
  // Runs the event loop until the drain ends it (EndLoop) or lws gives up.
  void Run();
  // Drains (drain.h) with `clock`: from the signal thread, never the loop.
  DrainReport Drain(Clock& clock);
  bool draining() const { return draining_.load(); }
  // Tears down in dependency order (so LeakSanitizer sees the truth): the
  // bus first (its handlers post to the loop), the links, the hub, the
  // socket layer. After Run() has returned.
  void Stop();

  const std::string& gateway_id() const { return gateway_id_; }
  int port() const;
  int operator_port() const;

  // DrainTarget: each step on the event loop.
  void BeginDrain() override;
  std::optional<size_t> StopAccepting() override;
  std::optional<size_t> CloseSome(size_t n) override;
  bool CloseRestAndWait(absl::Duration timeout) override;
  void LeaveFleet() override;
  std::optional<size_t> EndLoop() override;

 private:
  GatewayApp(v1::Config config, const Options& options);
  absl::Status Build();

  // The /metrics of the operator listener; loop-owned counts are copied
  // on the loop at each scrape (CollectFromLoop).
  void CollectFromLoop(std::vector<prometheus::MetricFamily>* out);
  // Its event loop hears control on the commands subject
  // (BusHandler::CommandsOnLoop). Any thread.
  bool CommandsOnLoop() const;

  v1::Config config_;
  Options options_;
  Metrics metrics_;
  std::string gateway_id_;
  std::atomic<bool> draining_{false};
  std::unique_ptr<WsServer> server_;
  std::unique_ptr<NatsClientImpl> bus_;
  AnswerKeys answer_keys_;
  std::unique_ptr<ControlLinkSet> links_;
  std::unique_ptr<Hub> hub_;
  // GET /readyz: asked on the loop from both listeners (one hysteresis).
  std::shared_ptr<std::function<std::string()>> readiness_;
  std::unique_ptr<HealthHttpServer> operator_http_;
  std::unique_ptr<BusHandler> bus_handler_;
  std::unique_ptr<PresenceAnnouncer> presence_;
};

}  // namespace switchboard::gateway
