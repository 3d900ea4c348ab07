// switchboard-gateway: reads flags, config and signals; GatewayApp (app.h) wires the parts.
#include <signal.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/runtime.h"
#include "common/cli_help.h"
#include "gateway/app.h"
#include "gateway/drain.h"
#include "gateway/supervisor.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, config, "config/switchboard.yaml", "config file (YAML)");
ABSL_FLAG(std::string, log_level, "info", "trace|debug|info|warn|error|off");
ABSL_FLAG(std::string, log_format, "text",
          "text|json: json is one object per line (ts in UTC, level, component, msg, request_id)");
ABSL_FLAG(bool, dev, false,
          "dev mode: accept the placeholder secrets published with Switchboard (scripts/run.sh); "
          "also SWITCHBOARD_DEV=1. Never in production");
ABSL_FLAG(int, port, -1, "override gateway.port (0 = OS chooses)");
ABSL_FLAG(std::string, listen_host, "", "override gateway.listen_host");
ABSL_FLAG(std::string, operator_listen, "",
          "override gateway.operator_listen: host:port for the operator's /livez and /readyz with reasons "
          "(port 0 = OS chooses)");
ABSL_FLAG(std::string, id, "", "gateway ID (default: hostname-port)");
ABSL_FLAG(int, drain_ms, 2000, "on SIGTERM, how long to wait for clients to go");
ABSL_FLAG(int, drain_delay_ms, 0,
          "on SIGTERM, how long to keep serving (accepting too) while already unready, before the drain: "
          "time for load balancers to stop sending new clients");
ABSL_FLAG(int, workers, 0,
          "event-loop processes for this instance, each a fleet member \"<id>-w<i>\" on the same port "
          "(SO_REUSEPORT); 0: one per core; 1: this process serves alone");
ABSL_FLAG(int, testing_bus_format_version, 0,
          "testing only: speak this bus format version instead of the current one (an older or newer gateway)");
ABSL_FLAG(bool, testing_unsigned_answers, false,
          "testing only: answer the bus unsigned and say so, as a gateway from before signed answers");
ABSL_FLAG(bool, reuse_port, false, "listen with SO_REUSEPORT (set for each worker by the supervisor)");
ABSL_FLAG(int, ready_fd, -1, "internal: the supervisor's readiness pipe");

int main(int argc, char** argv) {
  // Before anything touches OpenSSL: no exit-time cleanup. lws de-initialises
  // OpenSSL's global state when its TLS context goes, and the exit handler
  // then crashes on the freed state (seen with wss:// on OpenSSL 3).
  OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr);
  switchboard::SetFlagsUsage("switchboard-gateway", {"gateway/main.cc"});
  absl::SetProgramUsageMessage("switchboard-gateway --config=FILE [flags]: the WebSocket edge (README.md)");
  switchboard::HandleHelp(argc, argv, {"gateway/main.cc"});
  absl::ParseCommandLine(argc, argv);
  using namespace switchboard;

  if (auto st = InitLogging(absl::GetFlag(FLAGS_log_level), "gateway", absl::GetFlag(FLAGS_log_format)); !st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
    return 2;
  }
  RouteGrpcLogs();
  TuneRuntime();

  auto config_or = LoadConfig(absl::GetFlag(FLAGS_config), ConfigRole::kGateway);
  if (!config_or.ok()) {
    std::fprintf(stderr, "config error: %s\n", std::string(config_or.status().message()).c_str());
    return 2;
  }
  v1::Config config = *std::move(config_or);
  if (auto st = RefusePlaceholderSecrets(config); !st.ok()) {
    if (!DevMode(absl::GetFlag(FLAGS_dev))) {
      std::fprintf(stderr, "config error: %s\n", std::string(st.message()).c_str());
      return 2;
    }
    spdlog::warn("dev mode: placeholder secrets accepted ({})", std::string(st.message()).substr(0, st.message().find(':')));
  }
  if (absl::GetFlag(FLAGS_port) >= 0) config.mutable_gateway()->set_port(absl::GetFlag(FLAGS_port));
  if (!absl::GetFlag(FLAGS_listen_host).empty()) {
    config.mutable_gateway()->set_listen_host(absl::GetFlag(FLAGS_listen_host));
  }
  if (!absl::GetFlag(FLAGS_operator_listen).empty()) {
    config.mutable_gateway()->set_operator_listen(absl::GetFlag(FLAGS_operator_listen));
  }

  // Several workers: this process only supervises them (before any thread
  // exists: it spawns processes).
  int workers = absl::GetFlag(FLAGS_workers);
  if (workers <= 0) workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (workers > 1) {
    gateway::SupervisorOptions sup;
    sup.exe = "/proc/self/exe";
    sup.args.assign(argv + 1, argv + argc);
    sup.instance_id = absl::GetFlag(FLAGS_id);
    sup.host = config.gateway().listen_host();
    sup.port = static_cast<int>(config.gateway().port());
    sup.operator_listen = config.gateway().operator_listen();
    sup.workers = workers;
    sup.drain = absl::Milliseconds(absl::GetFlag(FLAGS_drain_ms) + absl::GetFlag(FLAGS_drain_delay_ms));
    return gateway::RunSupervisor(sup);
  }

  // Signals go to one waiting thread, never to the loop.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Every socket is a descriptor: take the whole hard limit, and fit the
  // session cap under it (leaving room for NATS, gRPC, the listener, logs).
  rlimit fds{};
  uint64_t descriptor_limit = 0;
  if (getrlimit(RLIMIT_NOFILE, &fds) == 0) {
    if (fds.rlim_cur < fds.rlim_max) {
      fds.rlim_cur = fds.rlim_max;
      setrlimit(RLIMIT_NOFILE, &fds);
      getrlimit(RLIMIT_NOFILE, &fds);
    }
    const uint64_t budget = fds.rlim_cur > 700 ? fds.rlim_cur - 600 : 100;
    if (config.gateway().max_sessions() > budget) {
      spdlog::warn("gateway.max_sessions {} does not fit this process's descriptor limit (RLIMIT_NOFILE {}); "
                   "using {}: give the container more (deploy/README.md, Descriptors)",
                   config.gateway().max_sessions(), static_cast<uint64_t>(fds.rlim_cur), budget);
      config.mutable_gateway()->set_max_sessions(static_cast<uint32_t>(budget));
    }
    descriptor_limit = fds.rlim_cur;
  }

  const std::string listen_host = config.gateway().listen_host();
  gateway::GatewayApp::Options app_opts;
  app_opts.gateway_id = absl::GetFlag(FLAGS_id);
  app_opts.version = kVersion;
  app_opts.reuse_port = absl::GetFlag(FLAGS_reuse_port);
  app_opts.descriptor_limit = descriptor_limit;
  app_opts.drain.delay = absl::Milliseconds(absl::GetFlag(FLAGS_drain_delay_ms));
  app_opts.drain.window = absl::Milliseconds(absl::GetFlag(FLAGS_drain_ms));
  app_opts.testing_bus_format_version = static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_testing_bus_format_version)));
  app_opts.testing_unsigned_answers = absl::GetFlag(FLAGS_testing_unsigned_answers);
  auto app_or = gateway::GatewayApp::Create(std::move(config), app_opts);
  if (!app_or.ok()) {
    if (absl::IsInvalidArgument(app_or.status())) {  // the config's (trusted_proxies, dns_server)
      std::fprintf(stderr, "config error: %s\n", std::string(app_or.status().message()).c_str());
      return 2;
    }
    spdlog::error("{}", std::string(app_or.status().message()));
    return 1;
  }
  std::unique_ptr<gateway::GatewayApp> app = *std::move(app_or);
  if (auto st = app->Start(); !st.ok()) {
    spdlog::error("{}", std::string(st.message()));
    return 1;
  }

  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    spdlog::info("signal {}: draining", sig);
    gateway::RealClock clock;
    app->Drain(clock);
  });

  if (const int ready_fd = absl::GetFlag(FLAGS_ready_fd); ready_fd >= 0) {
    // A worker: the supervisor announces the instance once all are ready.
    if (write(ready_fd, "ready\n", 6) != 6) spdlog::warn("cannot tell the supervisor this worker is ready");
    close(ready_fd);
  } else {
    std::printf("READY gateway_id=%s port=%d operator_port=%d\n", app->gateway_id().c_str(), app->port(),
                app->operator_port());
    std::fflush(stdout);
  }
  spdlog::info("gateway {} listening on {}:{}", app->gateway_id(), listen_host, app->port());
  app->Run();
  if (!app->draining()) {
    // The loop ended on its own (an lws error): drain what can be drained.
    spdlog::error("event loop ended unexpectedly");
    pthread_kill(signal_thread.native_handle(), SIGTERM);
  }
  signal_thread.join();
  app->Stop();
  return 0;
}
