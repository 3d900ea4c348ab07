// switchboard-gateway: reads flags and config, wires the parts, runs the loop.
#include <signal.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <sys/resource.h>

#include <cstdio>
#include <atomic>
#include <memory>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/config.h"
#include "common/dispatcher.h"
#include "common/grpc_tls.h"
#include "common/health_http.h"
#include "common/ids.h"
#include "common/logging.h"
#include "common/runtime.h"
#include "common/nats_client_impl.h"
#include "gateway/answer_keys.h"
#include "gateway/bus_handler.h"
#include "gateway/centrifuge_codec.h"
#include "gateway/control_link.h"
#include "gateway/control_link_set.h"
#include "gateway/hub.h"
#include "gateway/presence_announcer.h"
#include "gateway/readiness.h"
#include "gateway/supervisor.h"
#include "gateway/ws_server.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, config, "config/switchboard.yaml", "config file (YAML)");
ABSL_FLAG(std::string, log_level, "info", "trace|debug|info|warn|error|off");
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

namespace {

constexpr char kVersion[] = "0.1.0";

}  // namespace

int main(int argc, char** argv) {
  // Before anything touches OpenSSL: no exit-time cleanup. lws de-initialises
  // OpenSSL's global state when its TLS context goes, and the exit handler
  // then crashes on the freed state (seen with wss:// on OpenSSL 3).
  OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr);
  absl::SetProgramUsageMessage("switchboard-gateway --config=FILE");
  absl::ParseCommandLine(argc, argv);
  using namespace switchboard;

  if (auto st = InitLogging(absl::GetFlag(FLAGS_log_level), "gateway"); !st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
    return 2;
  }
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

  gateway::WsServer::Options ws_opts;
  ws_opts.host = config.gateway().listen_host();
  ws_opts.port = static_cast<int>(config.gateway().port());
  ws_opts.max_message_bytes = config.gateway().max_message_bytes();
  ws_opts.outbox_limit = config.gateway().outbox_limit();
  ws_opts.max_connections = config.gateway().max_sessions() + 500;  // room to refuse politely
  ws_opts.max_connections_per_ip = config.gateway().max_connections_per_ip();
  // Sockets, upgraded or not, stop being accepted before descriptors run out
  // (NATS, gRPC, the listener and logs keep the last 64).
  ws_opts.max_sockets = ws_opts.max_connections + 256;
  if (descriptor_limit > 128) {
    ws_opts.max_sockets = std::min<size_t>(ws_opts.max_sockets, descriptor_limit - 64);
  }
  ws_opts.connect_rate_limit = config.gateway().connection_rate_limit();
  ws_opts.connect_rate_limit_total = config.gateway().connection_rate_limit_total();
  ws_opts.connect_timeout = absl::Milliseconds(config.gateway().connect_timeout_ms());
  ws_opts.reuse_port = absl::GetFlag(FLAGS_reuse_port);
  ws_opts.trusted_proxies.assign(config.gateway().trusted_proxies().begin(), config.gateway().trusted_proxies().end());
  ws_opts.proxy_protocol = config.gateway().proxy_protocol();
  if (!config.gateway().tls_cert_file().empty()) {  // clients' TLS of its own
    ws_opts.tls_cert_file = config.gateway().tls_cert_file();
    ws_opts.tls_key_file = config.gateway().tls_key_file();
  } else if (TlsEnabled(config)) {
    ws_opts.tls_cert_file = config.tls().cert_file();
    ws_opts.tls_key_file = config.tls().key_file();
  }
  ws_opts.tls_reload_check = absl::Milliseconds(
      config.gateway().has_tls_reload_check_ms() ? config.gateway().tls_reload_check_ms() : 10000);
  auto server_or = gateway::WsServer::Create(ws_opts);
  if (!server_or.ok()) {
    if (absl::IsInvalidArgument(server_or.status())) {  // the config's (trusted_proxies): as any config error
      std::fprintf(stderr, "config error: %s\n", std::string(server_or.status().message()).c_str());
      return 2;
    }
    spdlog::error("{}", std::string(server_or.status().message()));
    return 1;
  }
  auto server = *std::move(server_or);

  std::string gateway_id = absl::GetFlag(FLAGS_id);
  if (gateway_id.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    gateway_id = absl::StrCat(host, "-", server->port());
  }

  auto bus_or = NatsClientImpl::Create(config.nats_url(), "switchboard-gateway " + gateway_id,
                                       config.nats_gateway().user(), config.nats_gateway().password(),
                                       config.tls().ca_file());
  if (!bus_or.ok()) {
    spdlog::error("{}", std::string(bus_or.status().message()));
    return 1;
  }
  auto bus = *std::move(bus_or);

  v1::GatewayHello hello;
  hello.set_gateway_id(gateway_id);
  hello.set_version(kVersion);
  hello.set_start_time_ms(NowUnixMs());
  hello.set_address(absl::StrCat(config.gateway().listen_host(), ":", server->port()));
  const bool signs_answers = !absl::GetFlag(FLAGS_testing_unsigned_answers);
  hello.set_signs_answers(signs_answers);
  gateway::AnswerKeys answer_keys;

  gateway::ControlLink::Options link_opts;
  link_opts.cluster_token = config.cluster_token();
  link_opts.heartbeat = absl::Milliseconds(config.control().heartbeat_interval_ms());
  link_opts.lease = absl::Milliseconds(config.control().lease_ms());
  link_opts.credentials = ChannelCredentials(config);
  if (signs_answers) {
    link_opts.on_welcome = [&answer_keys](const v1::ControlWelcome& w) {
      if (!w.answer_key().empty() && !w.reply_subject().empty()) answer_keys.Set(w.reply_subject(), w.answer_key());
    };
  }
  gateway::Hub* hub_for_load = nullptr;  // set once the hub exists, before any link starts
  link_opts.load = [&hub_for_load, srv = server.get()] {
    v1::GatewayLoad load;
    if (hub_for_load != nullptr) {
      load.set_sessions(hub_for_load->sessions_now());
      load.set_connections(hub_for_load->connections_now());
    }
    load.set_draining(srv->draining());
    return load;
  };
  auto resolver = gateway::ControlResolver::Create(config.control().dns_server());
  if (!resolver.ok()) {
    spdlog::error("{}", std::string(resolver.status().message()));
    return 2;
  }
  std::unique_ptr<gateway::Hub> hub;
  std::vector<std::string> control_addresses(config.control().addresses().begin(),
                                             config.control().addresses().end());
  gateway::ControlLinkSet links(
      control_addresses, *std::move(resolver), absl::Milliseconds(config.control().resolve_interval_ms()),
      [&](const std::string& address, const std::string& host) {
        gateway::ControlLink::Options opts = link_opts;
        if (!config.tls().ca_file().empty()) opts.tls_name = host;
        return std::make_unique<gateway::ControlLink>(address, hello, server.get(),
                                                      [&hub] { return hub->Snapshot(); }, opts);
      });
  hub = std::make_unique<gateway::Hub>(config, gateway_id, server.get(), &links);
  hub_for_load = hub.get();
  if (absl::GetFlag(FLAGS_testing_bus_format_version) > 0) {
    hub->set_bus_format_version(static_cast<uint32_t>(absl::GetFlag(FLAGS_testing_bus_format_version)));
  }
  server->set_hub(hub.get());

  // GET /readyz: can serve clients (gateway/readiness.h). One state (its
  // hysteresis), asked on the loop from both listeners: the clients' port
  // and the operator's.
  auto readiness = std::make_shared<std::function<std::string()>>(
      [&links, nats = bus.get(), hub = hub.get(), srv = server.get(),
       rule = gateway::Readiness(config.gateway().max_sessions(), config.gateway().unready_at_percent(),
                                 config.gateway().ready_again_at_percent())]() mutable -> std::string {
        gateway::Readiness::Facts facts;
        facts.nats_connected = nats->Connected();
        facts.not_attached = links.NoneAttached();
        facts.draining = srv->draining();
        facts.sessions = hub->session_count();
        return rule.Check(facts);
      });
  server->set_readiness([readiness] { return (*readiness)(); });
  // The operator's listener: the same answers with their reasons, asked of
  // the loop from the listener's own thread (a loop that does not answer
  // within 5 s is not live: the kubelet restarts it).
  std::unique_ptr<HealthHttpServer> operator_http;
  if (!config.gateway().operator_listen().empty()) {
    gateway::WsServer* srv = server.get();
    auto op_or = HealthHttpServer::Start(
        config.gateway().operator_listen(),
        [srv, readiness]() -> std::string {
          std::string why;
          if (!RunOnLoop(srv, [readiness] { return (*readiness)(); }, absl::Seconds(2), &why)) {
            return "the event loop did not answer within 2 s";
          }
          return why;
        },
        [srv]() -> std::string {
          bool answered = false;
          if (!RunOnLoop(srv, [] { return true; }, absl::Seconds(5), &answered)) {
            return "the event loop did not answer within 5 s";
          }
          return "";
        });
    if (!op_or.ok()) {
      spdlog::error("gateway.operator_listen: {}", std::string(op_or.status().message()));
      return 1;
    }
    operator_http = *std::move(op_or);
  }

  gateway::BusHandler bus_handler(bus.get(), server.get(), hub.get(), &answer_keys);
  if (auto st = bus_handler.Start(config.cluster()); !st.ok()) {
    spdlog::error("{}", std::string(st.message()));
    return 1;
  }
  // Hear before being asked: a member control asks but that is not on the
  // bus yet makes answers incomplete. Bounded: with NATS down at start the
  // gateway still attaches (and is named as missing until it can answer).
  if (!bus->WaitForFirstConnection(absl::Seconds(3))) {
    spdlog::warn("nats: not connected 3 s after start; attaching to control anyway");
  }
  // Every control replica waits for this gateway's answers while it hears
  // this, attached to that replica or not.
  gateway::PresenceAnnouncer presence(bus.get(), PresenceSubject(config.cluster()), gateway_id,
                                      absl::Milliseconds(config.control().heartbeat_interval_ms()));
  presence.Start();
  links.Start();

  std::atomic<bool> draining{false};
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    draining = true;
    gateway::WsServer* srv = server.get();
    // Unready at once, before anything closes.
    srv->BeginDrain();
    spdlog::info("signal {}: draining", sig);
    if (const int delay = absl::GetFlag(FLAGS_drain_delay_ms); delay > 0) {
      // Serving on while load balancers take this gateway out (a configured
      // wait, not synchronisation).
      absl::SleepFor(absl::Milliseconds(delay));
    }
    gateway::Hub* h = hub.get();
    // Stop accepting, then close clients with a reconnect code in slices
    // spread over most of the drain window, so they do not all reconnect to
    // the rest of the fleet at the same instant.
    const absl::Duration window = absl::Milliseconds(absl::GetFlag(FLAGS_drain_ms));
    const absl::Time deadline = absl::Now() + window;
    const absl::Duration ask = absl::Seconds(2);
    size_t total = 0;
    if (!RunOnLoop(srv, [srv] {
          srv->StopAccepting();
          return srv->connection_count();
        }, ask, &total)) {
      total = 0;
    }
    const absl::Duration tick = absl::Milliseconds(50);
    const int64_t slices = std::max<int64_t>(1, (window * 0.8) / tick);
    const size_t per_slice = std::max<size_t>(1, (total + slices - 1) / static_cast<size_t>(slices));
    size_t open = total;
    while (open > 0 && absl::Now() < deadline) {
      // One slice closed, and how many are still open, in one loop turn.
      if (!RunOnLoop(srv, [h, per_slice] {
            h->CloseAll(gateway::close_code::kShutdown, "shutdown", per_slice);
            return h->open_count();
          }, ask, &open) || open == 0) {
        break;
      }
      absl::SleepFor(tick);  // pacing the slices, not synchronising anything
    }
    // Whoever is left gets the close now; then wait, bounded, until every
    // close handshake has ended (lws gives a silent peer a few seconds).
    auto closed = std::make_shared<absl::Notification>();
    srv->Post([srv, h, closed] {
      h->CloseAll(gateway::close_code::kShutdown, "shutdown");
      srv->NotifyWhenEmpty([closed] { closed->Notify(); });
    });
    if (!closed->WaitForNotificationWithTimeout(absl::Seconds(10))) {
      spdlog::warn("drain: connections still open after the close handshakes' deadline");
    }
    // Leave the fleet (the bus, then every replica), then end the loop;
    // main tears the rest down in order.
    presence.Stop();
    links.Stop();
    size_t left = 0;
    RunOnLoop(srv, [srv] { return srv->connection_count(); }, ask, &left);
    spdlog::info("gateway drained ({} connections left), exiting", left);
    srv->Post([srv] { srv->Shutdown(); });
  });

  if (const int ready_fd = absl::GetFlag(FLAGS_ready_fd); ready_fd >= 0) {
    // A worker: the supervisor announces the instance once all are ready.
    if (write(ready_fd, "ready\n", 6) != 6) spdlog::warn("cannot tell the supervisor this worker is ready");
    close(ready_fd);
  } else {
    std::printf("READY gateway_id=%s port=%d operator_port=%d\n", gateway_id.c_str(), server->port(),
                operator_http ? operator_http->port() : 0);
    std::fflush(stdout);
  }
  spdlog::info("gateway {} listening on {}:{}", gateway_id, config.gateway().listen_host(), server->port());
  server->Run();
  if (!draining) {
    // The loop ended on its own (an lws error): drain what can be drained.
    spdlog::error("event loop ended unexpectedly");
    pthread_kill(signal_thread.native_handle(), SIGTERM);
  }
  signal_thread.join();
  presence.Stop();
  // Normal teardown, in dependency order, so LeakSanitizer sees the truth:
  // the bus first (its handlers post to the loop; queued replies are flushed),
  // then the links, the hub and the socket layer.
  operator_http.reset();  // it asks the loop, which is gone
  bus.reset();
  NatsClientImpl::ShutdownLibrary();
  links.Stop();
  hub.reset();
  server.reset();
  return 0;
}
