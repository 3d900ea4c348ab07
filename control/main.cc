// switchboard-control: reads flags and config, wires the parts, serves.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iterator>
#include <memory>
#include <thread>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/answer_mac.h"
#include "common/config.h"
#include "common/grpc_tls.h"
#include "common/health_http.h"
#include "common/ids.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/runtime.h"
#include "common/cli_help.h"
#include "common/nats_client_impl.h"
#include "common/timer_queue.h"
#include "control/fleet.h"
#include "control/health_service.h"
#include "control/presence_table.h"
#include "control/scatter_gather.h"
#include "control/stall_guard.h"
#include "control/services.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, config, "config/switchboard.yaml", "config file (YAML)");
ABSL_FLAG(std::string, log_level, "info", "trace|debug|info|warn|error|off");
ABSL_FLAG(std::string, log_format, "text",
          "text|json: json is one object per line (ts in UTC, level, component, msg, request_id)");
ABSL_FLAG(bool, dev, false,
          "dev mode: accept the placeholder secrets published with Switchboard (scripts/run.sh); "
          "also SWITCHBOARD_DEV=1. Never in production");
ABSL_FLAG(std::string, listen, "", "override control.listen (host:port; port 0 = OS chooses)");
ABSL_FLAG(std::string, health_listen, "",
          "override control.health_listen: host:port for HTTP /livez and /readyz (port 0 = OS chooses)");

int main(int argc, char** argv) {
  switchboard::SetFlagsUsage("switchboard-control", {"control/main.cc"});
  absl::SetProgramUsageMessage("switchboard-control --config=FILE [flags]: the API and fleet registry (README.md)");
  switchboard::HandleHelp(argc, argv, {"control/main.cc"});
  absl::ParseCommandLine(argc, argv);
  using namespace switchboard;

  if (auto st = InitLogging(absl::GetFlag(FLAGS_log_level), "control", absl::GetFlag(FLAGS_log_format)); !st.ok()) {
    std::fprintf(stderr, "%s\n", std::string(st.message()).c_str());
    return 2;
  }
  RouteGrpcLogs();
  RouteLwsLogs();
  TuneRuntime();

  auto config_or = LoadConfig(absl::GetFlag(FLAGS_config), ConfigRole::kControl);
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
  if (!absl::GetFlag(FLAGS_listen).empty()) config.mutable_control()->set_listen(absl::GetFlag(FLAGS_listen));
  if (!absl::GetFlag(FLAGS_health_listen).empty()) {
    config.mutable_control()->set_health_listen(absl::GetFlag(FLAGS_health_listen));
  }

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  auto bus_or = NatsClientImpl::Create(config.nats_url(), "switchboard-control", config.nats_control().user(),
                                       config.nats_control().password(), config.tls().ca_file());
  if (!bus_or.ok()) {
    spdlog::error("{}", std::string(bus_or.status().message()));
    return 1;
  }
  auto bus = *std::move(bus_or);
  auto timers = std::make_unique<TimerQueue>();
  const absl::Duration lease = absl::Milliseconds(config.control().lease_ms());
  control::Fleet fleet(lease);
  NatsClientImpl* nats = bus.get();
  // During its first lease, and for a lease after it noticed that it did not
  // run (a stall) or that its clock jumped, gateways may still be on their
  // way: no answer may claim to be complete. While the bus is down, nothing
  // can be asked. (After the bus comes back no extra wait is needed: a
  // gateway that is not yet back on the bus is a member that does not
  // answer, and is named as missing; failing over to another node of a NATS
  // cluster costs no complete answer.)
  const absl::Duration heartbeat = absl::Milliseconds(config.control().heartbeat_interval_ms());
  control::StallGuard stall(lease, std::max(lease - heartbeat, heartbeat), absl::Now(), control::MonotonicNow());
  auto readiness = [&stall, nats]() -> std::string {
    if (std::string why = stall.NotReady(absl::Now(), control::MonotonicNow()); !why.empty()) return why;
    if (!nats->Connected()) return "this control replica's bus connection is down";
    return "";
  };
  // Calls wait for every member and for every gateway heard on the bus:
  // one cut from this replica still holds sessions and answers.
  control::PresenceTable presence(lease);
  auto asked = [&fleet, &presence] {
    const absl::Time now = absl::Now();
    std::vector<std::string> ids = fleet.LiveIds(now);
    std::vector<std::string> heard = presence.PresentIds(now);
    std::vector<std::string> all;
    all.reserve(ids.size() + heard.size());
    std::set_union(ids.begin(), ids.end(), heard.begin(), heard.end(), std::back_inserter(all));
    return all;
  };
  // An answer counts only from the gateway it names: signed with the key
  // this replica gave that gateway (or unsigned from a live member of an
  // older version that does not sign).
  auto authentic = [&fleet](const std::string& gateway_id, std::string_view body, std::string_view mac) {
    const absl::Time now = absl::Now();
    if (mac.empty()) return fleet.AcceptsUnsigned(gateway_id, now);
    for (const auto& key : fleet.AnswerKeys(gateway_id, now)) {
      if (AnswerMacValid(key, body, mac)) return true;
    }
    return false;
  };
  control::ScatterGather gather(bus.get(), timers.get(), asked, GatewaysSubject(config.cluster()), readiness,
                                authentic);
  // GET /metrics on the health listener (deploy/README.md, Metrics).
  Metrics metrics;
  gather.EnableMetrics(&metrics);
  control::CallMetrics call_metrics(&metrics);
  metrics.AddCollector([&fleet, &gather, &presence, nats, &readiness](std::vector<prometheus::MetricFamily>* out) {
    using prometheus::MetricType;
    const absl::Time now = absl::Now();
    const std::vector<v1::GatewayInfo> members = fleet.List(now);
    uint64_t sessions = 0;
    size_t draining = 0;
    for (const auto& g : members) {
      sessions += g.sessions();
      draining += g.draining() ? 1 : 0;
    }
    auto add = [out](FamilyBuilder&& b) { out->push_back(std::move(b).Build()); };
    add(std::move(FamilyBuilder("switchboard_control_build_info", "The control replica's version (always 1)",
                                MetricType::Gauge)
                      .Add(1, {{"version", kVersion}})));
    add(std::move(FamilyBuilder("switchboard_control_fleet_gateways",
                                "Gateways attached to this replica with a fresh lease, by state", MetricType::Gauge)
                      .Add(static_cast<double>(members.size() - draining), {{"state", "serving"}})
                      .Add(static_cast<double>(draining), {{"state", "draining"}})));
    add(std::move(FamilyBuilder("switchboard_control_fleet_gateways_heard",
                                "Gateways heard on the bus (attached to this replica or not)", MetricType::Gauge)
                      .Add(static_cast<double>(presence.PresentIds(now).size()))));
    add(std::move(FamilyBuilder("switchboard_control_fleet_sessions",
                                "Sessions the attached gateways reported in their last heartbeat", MetricType::Gauge)
                      .Add(static_cast<double>(sessions))));
    add(std::move(FamilyBuilder("switchboard_control_lease_expiries_total",
                                "Gateways evicted because their lease ran out (no heartbeat)", MetricType::Counter)
                      .Add(static_cast<double>(fleet.lease_expiries()))));
    add(std::move(FamilyBuilder("switchboard_control_gathers_in_flight", "Fleet gathers waiting for answers",
                                MetricType::Gauge)
                      .Add(static_cast<double>(gather.in_flight()))));
    add(std::move(FamilyBuilder("switchboard_control_answers_unauthenticated_total",
                                "Bus answers thrown away: not from the gateway they name", MetricType::Counter)
                      .Add(static_cast<double>(gather.unauthenticated()))));
    add(std::move(FamilyBuilder("switchboard_control_requests_reasked_total",
                                "Requests published again for a gateway back on the bus", MetricType::Counter)
                      .Add(static_cast<double>(gather.reasked()))));
    add(std::move(FamilyBuilder("switchboard_control_nats_connected", "1 while connected to NATS", MetricType::Gauge)
                      .Add(nats->Connected() ? 1 : 0)));
    add(std::move(FamilyBuilder("switchboard_control_ready", "1 while /readyz says ready", MetricType::Gauge)
                      .Add(readiness().empty() ? 1 : 0)));
  });
  // A call stops waiting for a gateway that leaves the fleet and is not on
  // the bus either (and names it).
  fleet.set_on_leave([&gather, &presence](const std::string& id) {
    if (!presence.Present(id, absl::Now())) gather.MemberLeft(id);
  });
  auto heard = bus->Subscribe(PresenceSubject(config.cluster()), [&](const std::string&, const std::string&,
                                                                       const std::string& data) {
    v1::BusPresence p;
    if (!p.ParseFromString(data) || p.gateway_id().empty()) return;
    if (!p.leaving()) {
      if (presence.Seen(p.gateway_id(), absl::Now(), p.bus_session())) gather.Reask(p.gateway_id());
      return;
    }
    presence.Left(p.gateway_id());
    if (!fleet.IsLive(p.gateway_id(), absl::Now())) gather.MemberLeft(p.gateway_id());
  });
  if (!heard.ok()) {
    spdlog::error("{}", std::string(heard.message()));
    return 1;
  }
  gather.set_reply_prefix(RepliesSubjectPrefix(config.cluster()));
  gather.set_commands_subject(CommandsSubject(config.cluster()), [&fleet](const std::vector<std::string>& asked) {
    return fleet.AllReadCommands(asked, absl::Now());
  });
  if (auto st = gather.Start(); !st.ok()) {
    spdlog::error("{}", std::string(st.message()));
    return 1;
  }
  gather.set_max_in_flight(config.control().max_in_flight());
  nats->SetBusyPoll(absl::Microseconds(config.control().bus_busy_poll_us()));
  control::ControlService control_service(config, &fleet, &gather);
  control_service.set_metrics(&call_metrics);
  control::RegistryService registry_service(&fleet, NewUuid(), config.cluster_token(), gather.inbox());

  // Server reflection (grpc.reflection.v1alpha), from the descriptors built
  // into this binary: grpcurl and other tools list and describe the API
  // without proto files.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Gateways ping every half lease to notice a frozen control: allow it.
  // (A frozen gateway is noticed by its missing heartbeats, the lease.)
  const int half_lease_ms = static_cast<int>(config.control().lease_ms() / 2);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, half_lease_ms / 2);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  int port = 0;
  builder.AddListeningPort(config.control().listen(), ServerCredentials(config), &port);
  builder.RegisterService(control_service.grpc_service());
  builder.RegisterService(registry_service.grpc_service());
  // grpc.health.v1 for probes and load balancers: SERVING exactly when
  // /readyz says ready (kept current by the sweeper below).
  control::HealthService health;
  builder.RegisterService(health.grpc_service());
  // All of the server on one completion queue and one thread (see
  // control/cq_server.h); no callback service may be added, or gRPC starts
  // its own polling threads beside it.
  control::CqLoop loop(builder.AddCompletionQueue());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    spdlog::error("cannot listen on {}", config.control().listen());
    return 1;
  }
  control_service.Listen(&loop);
  registry_service.Listen(&loop);
  health.Listen(&loop);
  loop.Start();
  std::unique_ptr<HealthHttpServer> health_http;
  std::atomic<bool> draining{false};  // SIGTERM came: /readyz says not ready
  if (!config.control().health_listen().empty()) {
    auto h = HealthHttpServer::Start(config.control().health_listen(), [&readiness, &draining]() -> std::string {
      if (draining.load()) return "this control replica is stopping";
      return readiness();
    }, nullptr, &metrics);
    if (!h.ok()) {
      spdlog::error("{}", std::string(h.status().message()));
      return 1;
    }
    health_http = *std::move(h);
  }
  bool serving = readiness().empty();
  health.SetServing(serving);
  if (health_http) {
    std::printf("READY port=%d health_port=%d\n", port, health_http->port());
  } else {
    std::printf("READY port=%d\n", port);
  }
  std::fflush(stdout);
  spdlog::info("control listening on {} (port {})", config.control().listen(), port);

  // Leases: a gateway silent for a whole lease leaves the fleet (and its
  // stream is ended, so it comes back with a fresh snapshot).
  absl::Notification stopping;
  std::thread sweeper([&] {
    const absl::Duration tick = heartbeat / 2;
    while (!stopping.WaitForNotificationWithTimeout(tick)) {
      const absl::Time now = absl::Now();
      if (stall.Tick(now, control::MonotonicNow())) {
        fleet.RenewAll(now);
        presence.RenewAll(now);
      }
      fleet.Expire(now);
      gather.SendBeacon();
      for (const auto& id : presence.Expire(now)) {
        if (!fleet.IsLive(id, now)) gather.MemberLeft(id);
      }
      const bool now_serving = readiness().empty();
      if (now_serving != serving) {
        spdlog::info("health: {}", now_serving ? "serving" : "not serving: " + readiness());
        health.SetServing(now_serving);
      }
      serving = now_serving;
    }
  });

  int sig = 0;
  sigwait(&sigs, &sig);
  spdlog::info("signal {}: stopping", sig);
  // NOT_SERVING from now on; those who watch health move their calls to
  // other replicas meanwhile (shutdown_delay_ms), while this one still
  // answers everything.
  health.StopServing();
  draining.store(true);
  if (config.control().shutdown_delay_ms() > 0) {
    absl::SleepFor(absl::Milliseconds(config.control().shutdown_delay_ms()));
  }
  health.Shutdown();  // the Watch streams end
  stopping.Notify();
  sweeper.join();
  // Drain, so that a rolling restart of control fails no call: the server
  // takes no new call from now on (GOAWAY: a client's next call goes to
  // another replica, without the caller seeing an error), and the calls in
  // flight finish with their gateways' answers (each by its deadline, at most
  // control.max_timeout_ms). Only then do the gateways' Attach streams end
  // (ending them first would make those calls stop waiting for every gateway
  // and answer incomplete), and what is left of the calls ends with
  // UNAVAILABLE; the server's shutdown then waits for nothing else (what
  // would remain is cancelled at its deadline), and the loop drains.
  const absl::Duration drain = absl::Milliseconds(config.control().max_timeout_ms()) + absl::Seconds(1);
  std::thread server_shutdown([&] { server->Shutdown(absl::ToChronoTime(absl::Now() + drain + absl::Seconds(1))); });
  if (!gather.WaitIdle(drain)) spdlog::warn("stopping: calls still in flight after {}", absl::FormatDuration(drain));
  gather.Close(absl::UnavailableError(control::Fleet::kStopping));
  fleet.Close();
  server_shutdown.join();
  loop.Stop();
  // Tear down in dependency order: no bus message and no timer may reach the
  // scatter-gather once it starts to go.
  health_http.reset();
  bus.reset();
  NatsClientImpl::ShutdownLibrary();
  timers.reset();
  return 0;
}
