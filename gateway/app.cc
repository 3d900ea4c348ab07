#include "gateway/app.h"

#include <unistd.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/config.h"
#include "common/dispatcher.h"
#include "common/grpc_tls.h"
#include "common/ids.h"
#include "gateway/centrifuge_codec.h"
#include "gateway/control_link.h"
#include "gateway/control_resolver.h"
#include "gateway/readiness.h"
#include "spdlog/spdlog.h"

namespace switchboard::gateway {
namespace {

// How long the drain waits for the loop to answer one step.
constexpr absl::Duration kAsk = absl::Seconds(2);

WsServer::Options ServerOptions(const v1::Config& config, const GatewayApp::Options& app) {
  WsServer::Options o;
  const v1::GatewayConfig& g = config.gateway();
  o.host = g.listen_host();
  o.port = static_cast<int>(g.port());
  o.max_message_bytes = g.max_message_bytes();
  o.outbox_limit = g.outbox_limit();
  o.max_connections = g.max_sessions() + 500;  // room to refuse politely
  o.max_connections_per_ip = g.max_connections_per_ip();
  // Sockets, upgraded or not, stop being accepted before descriptors run out
  // (NATS, gRPC, the listener and logs keep the last 64).
  o.max_sockets = o.max_connections + 256;
  if (app.descriptor_limit > 128) o.max_sockets = std::min<size_t>(o.max_sockets, app.descriptor_limit - 64);
  o.connect_rate_limit = g.connection_rate_limit();
  o.connect_rate_limit_total = g.connection_rate_limit_total();
  o.connect_timeout = absl::Milliseconds(g.connect_timeout_ms());
  o.reuse_port = app.reuse_port;
  o.trusted_proxies.assign(g.trusted_proxies().begin(), g.trusted_proxies().end());
  o.proxy_protocol = g.proxy_protocol();
  if (!g.tls_cert_file().empty()) {  // clients' TLS of its own
    o.tls_cert_file = g.tls_cert_file();
    o.tls_key_file = g.tls_key_file();
  } else if (TlsEnabled(config)) {
    o.tls_cert_file = config.tls().cert_file();
    o.tls_key_file = config.tls().key_file();
  }
  o.tls_reload_check = absl::Milliseconds(g.has_tls_reload_check_ms() ? g.tls_reload_check_ms() : 10000);
  return o;
}

}  // namespace

GatewayApp::GatewayApp(v1::Config config, const Options& options)
    : config_(std::move(config)), options_(options), gateway_id_(options.gateway_id) {}

GatewayApp::~GatewayApp() = default;

absl::StatusOr<std::unique_ptr<GatewayApp>> GatewayApp::Create(v1::Config config, const Options& options) {
  std::unique_ptr<GatewayApp> app(new GatewayApp(std::move(config), options));
  if (absl::Status st = app->Build(); !st.ok()) return st;
  return app;
}

absl::Status GatewayApp::Build() {
  const v1::Config& config = config_;
  auto server_or = WsServer::Create(ServerOptions(config, options_));
  if (!server_or.ok()) return server_or.status();  // InvalidArgument: the config's (trusted_proxies)
  server_ = *std::move(server_or);

  if (gateway_id_.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    gateway_id_ = absl::StrCat(host, "-", server_->port());
  }

  auto bus_or = NatsClientImpl::Create(config.nats_url(), "switchboard-gateway " + gateway_id_,
                                       config.nats_gateway().user(), config.nats_gateway().password(),
                                       config.tls().ca_file());
  if (!bus_or.ok()) return absl::UnavailableError(bus_or.status().message());
  bus_ = *std::move(bus_or);
  // A third connection, read by the loop itself: commands (sends,
  // terminations) go from the socket to the hub with no thread hand-off.
  if (absl::Status st = bus_->StartLoopReceiver(); !st.ok()) {
    spdlog::warn("nats: no connection for the loop ({}); commands reach it through the bus thread",
                 std::string(st.message()));
  }

  v1::GatewayHello hello;
  hello.set_gateway_id(gateway_id_);
  hello.set_version(options_.version);
  hello.set_start_time_ms(NowUnixMs());
  hello.set_address(absl::StrCat(config.gateway().listen_host(), ":", server_->port()));
  const bool signs_answers = !options_.testing_unsigned_answers;
  hello.set_signs_answers(signs_answers);

  ControlLink::Options link_opts;
  link_opts.cluster_token = config.cluster_token();
  link_opts.heartbeat = absl::Milliseconds(config.control().heartbeat_interval_ms());
  link_opts.lease = absl::Milliseconds(config.control().lease_ms());
  link_opts.credentials = ChannelCredentials(config);
  if (signs_answers) {
    answer_keys_.set_signing(true);
    link_opts.on_welcome = [this](const v1::ControlWelcome& w) {
      if (w.answer_key().empty() || w.reply_subject().empty()) return;
      // Answers to this replica's requests that came before its welcome
      // (AnswerKeys::Sign held them): signed now, sent now.
      for (auto& data : answer_keys_.Set(w.reply_subject(), w.answer_key(), absl::Now())) {
        if (auto st = bus_->PublishNow(w.reply_subject(), data); !st.ok()) {
          spdlog::warn("bus: a held answer was not sent: {}", std::string(st.message()));
        }
      }
    };
  }
  // The hub exists before any link starts (Start()).
  link_opts.load = [this] {
    v1::GatewayLoad load;
    if (hub_ != nullptr) {
      load.set_sessions(hub_->sessions_now());
      load.set_connections(hub_->connections_now());
    }
    load.set_draining(server_->draining());
    // Commands may come on the commands subject (read by the loop itself)
    // while the loop hears control's beacons there; a draining gateway takes
    // them the old way, as its loop is about to end.
    load.set_commands_on_loop(!server_->draining() && CommandsOnLoop());
    return load;
  };
  auto resolver = ControlResolver::Create(config.control().dns_server());
  if (!resolver.ok()) return absl::InvalidArgumentError(resolver.status().message());
  std::vector<std::string> control_addresses(config.control().addresses().begin(),
                                             config.control().addresses().end());
  links_ = std::make_unique<ControlLinkSet>(
      control_addresses, *std::move(resolver), absl::Milliseconds(config.control().resolve_interval_ms()),
      [this, link_opts, hello](const std::string& address, const std::string& host) {
        ControlLink::Options opts = link_opts;
        if (!config_.tls().ca_file().empty()) opts.tls_name = host;
        return std::make_unique<ControlLink>(address, hello, server_.get(), [this] { return hub_->Snapshot(); },
                                             opts);
      });
  hub_ = std::make_unique<Hub>(config, gateway_id_, server_.get(), links_.get());
  if (options_.testing_bus_format_version > 0) hub_->set_bus_format_version(options_.testing_bus_format_version);
  server_->set_hub(hub_.get());

  // GET /readyz: can serve clients (gateway/readiness.h). One state (its
  // hysteresis), asked on the loop from both listeners: the clients' port
  // and the operator's.
  readiness_ = std::make_shared<std::function<std::string()>>(
      [this, rule = Readiness(config.gateway().max_sessions(), config.gateway().unready_at_percent(),
                              config.gateway().ready_again_at_percent())]() mutable -> std::string {
        Readiness::Facts facts;
        facts.nats_connected = bus_->Connected();
        facts.not_attached = links_->NoneAttached();
        facts.draining = server_->draining();
        facts.sessions = hub_->session_count();
        return rule.Check(facts);
      });
  server_->set_readiness([readiness = readiness_] { return (*readiness)(); });
  // The operator's listener: the same answers with their reasons, asked of
  // the loop from the listener's own thread (a loop that does not answer
  // within 5 s is not live: the kubelet restarts it).
  if (!config.gateway().operator_listen().empty()) {
    WsServer* srv = server_.get();
    auto op_or = HealthHttpServer::Start(
        config.gateway().operator_listen(),
        [srv, readiness = readiness_]() -> std::string {
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
        },
        &metrics_);
    if (!op_or.ok()) return absl::UnavailableError(absl::StrCat("gateway.operator_listen: ", op_or.status().message()));
    operator_http_ = *std::move(op_or);
  }
  bus_handler_ = std::make_unique<BusHandler>(bus_.get(), server_.get(), hub_.get(), &answer_keys_);
  bus_handler_->EnableMetrics(&metrics_);
  metrics_.AddCollector([this](std::vector<prometheus::MetricFamily>* out) { CollectFromLoop(out); });
  // Every control replica waits for this gateway's answers while it hears
  // this, attached to that replica or not.
  presence_ = std::make_unique<PresenceAnnouncer>(bus_.get(), PresenceSubject(config.cluster()), gateway_id_,
                                                  absl::Milliseconds(config.control().heartbeat_interval_ms()));
  return absl::OkStatus();
}

absl::Status GatewayApp::Start() {
  if (absl::Status st = bus_handler_->Start(config_.cluster()); !st.ok()) return st;
  // Hear before being asked: a member control asks but that is not on the
  // bus yet makes answers incomplete. Bounded: with NATS down at start the
  // gateway still attaches (and is named as missing until it can answer).
  if (!bus_->WaitForFirstConnection(absl::Seconds(3))) {
    spdlog::warn("nats: not connected 3 s after start; attaching to control anyway");
  }
  presence_->Start();
  links_->Start();
  return absl::OkStatus();
}

int GatewayApp::port() const { return server_->port(); }
int GatewayApp::operator_port() const { return operator_http_ ? operator_http_->port() : 0; }

void GatewayApp::Run() { server_->Run(); }

DrainReport GatewayApp::Drain(Clock& clock) {
  draining_ = true;
  DrainReport report = RunDrain(*this, clock, options_.drain);
  if (!report.closed_in_time) spdlog::warn("drain: connections still open after the close handshakes' deadline");
  spdlog::info("gateway drained ({} connections left), exiting",
               report.left.has_value() ? std::to_string(*report.left) : std::string("an unknown number of"));
  return report;
}

bool GatewayApp::CommandsOnLoop() const {
  // Beacons come every half heartbeat: three heartbeats hear six.
  return bus_handler_ != nullptr &&
         bus_handler_->CommandsOnLoop(3 * absl::Milliseconds(config_.control().heartbeat_interval_ms()));
}

void GatewayApp::CollectFromLoop(std::vector<prometheus::MetricFamily>* out) {
  using prometheus::MetricType;
  struct Snapshot {
    WsServer::Counters counters;
    std::array<uint64_t, static_cast<size_t>(Admission::Reason::kCount)> refused{};
    size_t open_sockets = 0, max_sockets = 0, connections = 0;
    HubStats stats;
    uint64_t tls_reloads = 0, tls_reload_failures = 0;
  };
  WsServer* srv = server_.get();
  Hub* hub = hub_.get();
  Snapshot s;
  const bool answered = RunOnLoop(
      srv,
      [srv, hub] {
        Snapshot snap;
        snap.counters = srv->counters();
        for (size_t i = 0; i < snap.refused.size(); ++i) {
          snap.refused[i] = srv->admission().count(static_cast<Admission::Reason>(i));
        }
        snap.open_sockets = srv->admission().open_sockets();
        snap.max_sockets = srv->admission().max_sockets();
        snap.connections = hub->connection_count();
        snap.stats = hub->stats();
        snap.tls_reloads = srv->tls_reloads();
        snap.tls_reload_failures = srv->tls_reload_failures();
        return snap;
      },
      absl::Seconds(2), &s);
  auto add = [out](FamilyBuilder&& b) { out->push_back(std::move(b).Build()); };
  add(std::move(FamilyBuilder("switchboard_gateway_build_info", "The gateway's version (always 1)", MetricType::Gauge)
                    .Add(1, {{"version", options_.version}})));
  add(std::move(FamilyBuilder("switchboard_gateway_loop_responsive",
                              "1 when the event loop answered this scrape within 2 s (0: the loop's figures are "
                              "missing from this scrape)",
                              MetricType::Gauge)
                    .Add(answered ? 1 : 0)));
  // Off the loop: the session index, the links and the bus are thread-safe.
  FamilyBuilder sessions("switchboard_gateway_sessions", "Sessions open, by app, transport and protocol",
                         MetricType::Gauge);
  for (const auto& k : hub->SessionKinds()) {
    sessions.Add(k.sessions, {{"app", k.app_id}, {"transport", k.transport}, {"protocol", k.protocol}});
  }
  add(std::move(sessions));
  add(std::move(FamilyBuilder("switchboard_gateway_sessions_max",
                              "gateway.max_sessions as this process uses it (fitted under its descriptors)",
                              MetricType::Gauge)
                    .Add(config_.gateway().max_sessions())));
  const ControlLinkSet::Counts links = links_->counts();
  add(std::move(FamilyBuilder("switchboard_gateway_control_replicas", "Control replicas this gateway resolves",
                              MetricType::Gauge)
                    .Add(static_cast<double>(links.replicas))));
  add(std::move(FamilyBuilder("switchboard_gateway_control_replicas_attached",
                              "Control replicas this gateway is attached to now", MetricType::Gauge)
                    .Add(static_cast<double>(links.attached))));
  add(std::move(FamilyBuilder("switchboard_gateway_control_attaches_total",
                              "Attaches to control replicas since start (the first ones and every re-attach)",
                              MetricType::Counter)
                    .Add(static_cast<double>(links.attaches))));
  add(std::move(FamilyBuilder("switchboard_gateway_nats_connected", "1 while connected to NATS", MetricType::Gauge)
                    .Add(bus_->Connected() ? 1 : 0)));
  add(std::move(FamilyBuilder("switchboard_gateway_commands_on_loop",
                              "1 while the event loop hears control on the commands subject (commands may come there)",
                              MetricType::Gauge)
                    .Add(CommandsOnLoop() ? 1 : 0)));
  add(std::move(FamilyBuilder("switchboard_gateway_draining", "1 once the gateway drains", MetricType::Gauge)
                    .Add(server_->draining() ? 1 : 0)));
  add(std::move(FamilyBuilder("switchboard_gateway_loop_posts_dropped_total",
                              "Work for the event loop dropped because its queue was full", MetricType::Counter)
                    .Add(static_cast<double>(server_->posts_dropped()))));
  if (!answered) return;
  const WsServer::Counters& c = s.counters;
  add(std::move(FamilyBuilder("switchboard_gateway_connections",
                              "Client connections open (WebSocket and uni_http_stream, with or without a session)",
                              MetricType::Gauge)
                    .Add(static_cast<double>(s.connections))));
  add(std::move(FamilyBuilder("switchboard_gateway_sockets_open",
                              "Sockets open on the clients' port, upgraded or not", MetricType::Gauge)
                    .Add(static_cast<double>(s.open_sockets))));
  add(std::move(FamilyBuilder("switchboard_gateway_sockets_max",
                              "Sockets this process accepts at most (beyond, new ones are closed at once)",
                              MetricType::Gauge)
                    .Add(static_cast<double>(s.max_sockets))));
  add(std::move(FamilyBuilder("switchboard_gateway_connects_total", "Sessions started (a connect that succeeded)",
                              MetricType::Counter)
                    .Add(static_cast<double>(s.stats.connects_ok))));
  FamilyBuilder refused("switchboard_gateway_connects_refused_total",
                        "Connections refused (HTTP 503 before the upgrade, a socket closed as accepted, or a "
                        "connect with a bad or expired token), by reason",
                        MetricType::Counter);
  for (size_t i = 0; i < s.refused.size(); ++i) {
    refused.Add(static_cast<double>(s.refused[i]), {{"reason", Admission::Label(static_cast<Admission::Reason>(i))}});
  }
  refused.Add(static_cast<double>(s.stats.bad_tokens), {{"reason", "bad_token"}});
  refused.Add(static_cast<double>(s.stats.expired_tokens), {{"reason", "expired_token"}});
  add(std::move(refused));
  FamilyBuilder closes("switchboard_gateway_closes_total",
                       "Connections the gateway closed, by the close code it sent (its own list: deploy/README.md)",
                       MetricType::Counter);
  std::vector<std::pair<int, uint64_t>> codes(c.closes_by_code.begin(), c.closes_by_code.end());
  std::sort(codes.begin(), codes.end());
  for (const auto& [code, n] : codes) closes.Add(static_cast<double>(n), {{"code", std::to_string(code)}});
  add(std::move(closes));
  add(std::move(FamilyBuilder("switchboard_gateway_client_closes_total",
                              "Close handshakes clients started", MetricType::Counter)
                    .Add(static_cast<double>(c.client_closes))));
  add(std::move(FamilyBuilder("switchboard_gateway_slow_consumer_closes_total",
                              "Connections closed because their outbox was full (3008, slow)", MetricType::Counter)
                    .Add(static_cast<double>(c.outbox_full_closes))));
  add(std::move(FamilyBuilder("switchboard_gateway_messages_received_total", "Whole messages received from clients",
                              MetricType::Counter)
                    .Add(static_cast<double>(c.messages_in))));
  add(std::move(FamilyBuilder("switchboard_gateway_received_bytes_total",
                              "Payload bytes received from clients", MetricType::Counter)
                    .Add(static_cast<double>(c.bytes_in))));
  add(std::move(FamilyBuilder("switchboard_gateway_messages_sent_total",
                              "Messages (uni_http_stream lines) handed to clients", MetricType::Counter)
                    .Add(static_cast<double>(c.messages_out))));
  add(std::move(FamilyBuilder("switchboard_gateway_sent_bytes_total", "Payload bytes handed to clients",
                              MetricType::Counter)
                    .Add(static_cast<double>(c.bytes_out))));
  add(std::move(FamilyBuilder("switchboard_gateway_bad_frames_total",
                              "Client frames the protocol could not use (unparseable, unknown command)",
                              MetricType::Counter)
                    .Add(static_cast<double>(s.stats.bad_frames))));
  add(std::move(FamilyBuilder("switchboard_gateway_tls_reloads_total",
                              "Client certificate files looked at after a change, by result", MetricType::Counter)
                    .Add(static_cast<double>(s.tls_reloads), {{"result", "loaded"}})
                    .Add(static_cast<double>(s.tls_reload_failures), {{"result", "refused"}})));
  add(std::move(FamilyBuilder("switchboard_gateway_loop_lag_seconds",
                              "How late the event loop ran its timer tick", MetricType::Histogram)
                    .AddHistogram(std::vector<double>(WsServer::Counters::Histogram::kBounds.begin(),
                                                      WsServer::Counters::Histogram::kBounds.end()),
                                  std::vector<uint64_t>(c.loop_lag.counts.begin(), c.loop_lag.counts.end()),
                                  c.loop_lag.sum)));
}

void GatewayApp::BeginDrain() { server_->BeginDrain(); }

std::optional<size_t> GatewayApp::StopAccepting() {
  size_t total = 0;
  WsServer* srv = server_.get();
  if (!RunOnLoop(srv, [srv] {
        srv->StopAccepting();
        return srv->connection_count();
      }, kAsk, &total)) {
    return std::nullopt;
  }
  return total;
}

std::optional<size_t> GatewayApp::CloseSome(size_t n) {
  size_t open = 0;
  Hub* h = hub_.get();
  // One slice closed, and how many are still open, in one loop turn.
  if (!RunOnLoop(server_.get(), [h, n] {
        h->CloseAll(close_code::kShutdown, "shutdown", n);
        return h->open_count();
      }, kAsk, &open)) {
    return std::nullopt;
  }
  return open;
}

bool GatewayApp::CloseRestAndWait(absl::Duration timeout) {
  auto closed = std::make_shared<absl::Notification>();
  WsServer* srv = server_.get();
  Hub* h = hub_.get();
  srv->Post([srv, h, closed] {
    h->CloseAll(close_code::kShutdown, "shutdown");
    srv->NotifyWhenEmpty([closed] { closed->Notify(); });
  });
  return closed->WaitForNotificationWithTimeout(timeout);
}

void GatewayApp::LeaveFleet() {
  presence_->Stop();
  links_->Stop();
}

std::optional<size_t> GatewayApp::EndLoop() {
  WsServer* srv = server_.get();
  size_t left = 0;
  const bool answered = RunOnLoop(srv, [srv] { return srv->connection_count(); }, kAsk, &left);
  srv->Post([srv] { srv->Shutdown(); });
  if (!answered) return std::nullopt;
  return left;
}

void GatewayApp::Stop() {
  if (presence_) presence_->Stop();
  if (links_) links_->Stop();  // their load reports read the bus handler
  operator_http_.reset();  // it asks the loop, which is gone
  bus_.reset();  // before the handler its subscriptions call
  NatsClientImpl::ShutdownLibrary();
  bus_handler_.reset();
  hub_.reset();
  server_.reset();
}

}  // namespace switchboard::gateway
