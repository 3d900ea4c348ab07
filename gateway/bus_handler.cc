#include "gateway/bus_handler.h"

#include "common/logging.h"
#include "common/metrics.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"

#include <memory>

#include "common/answer_mac.h"
#include "common/config.h"
#include "gateway/record_chunks.h"
#include "spdlog/spdlog.h"
#include "switchboard/v1/bus.pb.h"

namespace switchboard::gateway {

std::vector<v1::BusReply> SplitReply(v1::BusReply reply, size_t max_bytes) {
  std::vector<v1::BusReply> out;
  if (reply.ByteSizeLong() <= max_bytes) {
    out.push_back(std::move(reply));
    return out;
  }
  std::vector<v1::SessionRecord> sessions(std::make_move_iterator(reply.mutable_sessions()->begin()),
                                          std::make_move_iterator(reply.mutable_sessions()->end()));
  v1::BusReply header = std::move(reply);
  header.clear_sessions();
  const size_t header_bytes = header.ByteSizeLong() + 16;  // part, parts
  const size_t room = max_bytes > header_bytes + 1024 ? max_bytes - header_bytes : 1024;
  for (auto& chunk : ChunkRecords(std::move(sessions), room)) {
    v1::BusReply part;
    part.set_format_version(header.format_version());
    part.set_request_id(header.request_id());
    part.set_gateway_id(header.gateway_id());
    for (auto& s : chunk) *part.add_sessions() = std::move(s);
    out.push_back(std::move(part));
  }
  if (out.empty()) out.push_back(header);
  out.front().set_closed(header.closed());
  out.front().set_error(header.error());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].set_part(static_cast<uint32_t>(i));
    out[i].set_parts(static_cast<uint32_t>(out.size()));
  }
  return out;
}

absl::Status BusHandler::Start(const std::string& cluster) {
  const std::string subject = GatewaysSubject(cluster);
  if (const int fd = bus_->LoopReceiverFd(); fd >= 0) {
    // Commands read on the loop itself, from a connection of its own
    // subscribed to the commands subject: no wake-up between the socket and
    // the command. Control sends them there once every gateway it asks
    // reports that its loop hears control's beacons there
    // (CommandsOnLoop, GatewayLoad.commands_on_loop); until then, and from
    // older replicas, on the gateways subject (OnMessage).
    NatsClient* bus = bus_;
    if (!loop_->Watch(fd, [bus] { bus->PumpLoopReceiver(); })) {
      spdlog::warn("bus: the loop cannot read the bus itself; commands reach it through the bus thread");
    } else if (auto st = bus_->SubscribeOnLoop(CommandsSubject(cluster), [this](const std::string&, const std::string& reply,
                                                               const std::string& data) { OnLoopMessage(reply, data); });
               !st.ok()) {
      spdlog::warn("bus: the loop's own subscription failed ({}); commands reach it through the bus thread",
                   std::string(st.message()));
    }
  }
  return bus_->Subscribe(subject,
                         [this](const std::string&, const std::string& reply, const std::string& data) {
                           OnMessage(reply, data);
                         });
}

void BusHandler::OnMessage(const std::string& reply_to, const std::string& data) {
  auto request = std::make_shared<v1::BusRequest>();
  const absl::Time received = absl::Now();
  if (reply_to.empty() || !request->ParseFromString(data)) {
    DropMalformed();
    return;
  }
  const Op op = OpOf(*request);
  spdlog::debug("bus: request {} -> {}", request->request_id(), reply_to);
  if (Hub::IsQuery(*request)) {
    // Reads only: answered here, on the bus thread, and sent from it (no
    // loop wake-up, no sender-thread hand-off: two thread hops fewer).
    Send(reply_to, hub_->AnswerQuery(*request), /*now=*/true);
    Handled(op, received);
    return;
  }
  if (!FirstTime(*request)) return;
  if (auto nothing = hub_->AnswerIfNothingToDo(*request)) {
    // No session here to act on (most gateways, for one user's command):
    // answered here, as a query is.
    spdlog::debug("bus: {} concerns no session here", request->request_id());
    Send(reply_to, *std::move(nothing), /*now=*/true);
    Handled(op, received);
    return;
  }
  // If the loop's queue is full the request is dropped: control names this
  // gateway as missing, which is the truth.
  (void)loop_->Post([this, request, reply_to, op, received] { RunCommand(*request, reply_to, op, received); });
}

void BusHandler::OnLoopMessage(const std::string& reply_to, const std::string& data) {
  const absl::Time received = absl::Now();
  v1::BusRequest request;
  const bool parsed = request.ParseFromString(data);
  if (parsed && reply_to.empty() && request.op_case() == v1::BusRequest::OP_NOT_SET) {
    // Control's beacon (ScatterGather::SendBeacon): this loop hears control
    // on the commands subject.
    if (last_beacon_ns_.exchange(absl::ToUnixNanos(received)) == 0) {
      spdlog::info("bus: control heard on the commands subject: commands are read on the loop");
    }
    return;
  }
  if (reply_to.empty() || !parsed) {
    DropMalformed();
    return;
  }
  if (Hub::IsQuery(request)) {  // control sends none here; answered all the same
    Send(reply_to, hub_->AnswerQuery(request), /*now=*/false);
    Handled(kUserQuery, received);
    return;
  }
  if (!FirstTime(request)) return;
  RunCommand(request, reply_to, OpOf(request), received);
}

void BusHandler::RunCommand(const v1::BusRequest& request, const std::string& reply_to, Op op, absl::Time received) {
  spdlog::debug("bus: handling {}", request.request_id());
  v1::BusReply reply = hub_->HandleBusRequest(request);
  if (op == kTerminate || op == kDisconnect) {
    // The command's request ID is control's audit record's: one grep
    // finds the call, the gather and each gateway's part in it.
    ScopedLogFields fields(nlohmann::ordered_json{{"request_id", request.request_id()}});
    spdlog::info("bus: {} from control: closed {}{}", op == kTerminate ? "terminate" : "disconnect",
                 reply.closed(), reply.error().empty() ? "" : "; error: " + reply.error());
  }
  Send(reply_to, std::move(reply), /*now=*/false);
  Handled(op, received);
}

bool BusHandler::CommandsOnLoop(absl::Duration window) const {
  const int64_t last = last_beacon_ns_.load();
  return last != 0 && absl::Now() - absl::FromUnixNanos(last) < window && bus_->LoopReceiverConnected();
}

BusHandler::Op BusHandler::OpOf(const v1::BusRequest& request) {
  switch (request.op_case()) {
    case v1::BusRequest::kUserQuery: return kUserQuery;
    case v1::BusRequest::kTerminate: return kTerminate;
    case v1::BusRequest::kDisconnect: return kDisconnect;
    case v1::BusRequest::kSend: return kSend;
    default: return kOther;
  }
}

void BusHandler::EnableMetrics(Metrics* metrics) {
  auto& requests = prometheus::BuildCounter()
                       .Name("switchboard_gateway_bus_requests_total")
                       .Help("Requests from control heard on the bus, by operation (answered or queued for the loop)")
                       .Register(metrics->registry());
  auto& seconds = prometheus::BuildHistogram()
                      .Name("switchboard_gateway_bus_request_duration_seconds")
                      .Help("From a bus request's arrival to its answer handed to NATS, by operation")
                      .Register(metrics->registry());
  static const char* kNames[kOps] = {"user_query", "terminate", "disconnect", "send", "other"};
  const prometheus::Histogram::BucketBoundaries bounds{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                       0.01,   0.025,   0.05,   0.1,   0.25,   1};
  for (int i = 0; i < kOps; ++i) {
    op_metrics_[i].requests = &requests.Add({{"op", kNames[i]}});
    op_metrics_[i].seconds = &seconds.Add({{"op", kNames[i]}}, bounds);
  }
  repeated_ = &prometheus::BuildCounter()
                   .Name("switchboard_gateway_bus_requests_repeated_total")
                   .Help("Commands heard again (control re-asked) and not run twice")
                   .Register(metrics->registry())
                   .Add({});
  malformed_metric_ = &prometheus::BuildCounter()
                           .Name("switchboard_gateway_bus_requests_malformed_total")
                           .Help("Bus messages dropped as unreadable or without a reply subject")
                           .Register(metrics->registry())
                           .Add({});
}

void BusHandler::Handled(Op op, absl::Time received) {
  const OpMetrics& m = op_metrics_[op];
  if (m.requests == nullptr) return;
  m.requests->Increment();
  m.seconds->Observe(absl::ToDoubleSeconds(absl::Now() - received));
}

void BusHandler::DropMalformed() {
  if (malformed_metric_ != nullptr) malformed_metric_->Increment();
  if (malformed_.fetch_add(1) == 0) spdlog::warn("bus: dropping malformed request");
}

bool BusHandler::FirstTime(const v1::BusRequest& request) {
  const absl::Duration remember =
      request.remember_ms() > 0 ? absl::Milliseconds(request.remember_ms()) : kDefaultRemember;
  absl::MutexLock lock(&recent_mu_);
  const uint64_t early = recent_.evicted_early();
  const bool first = recent_.FirstTime(request.request_id(), absl::Now(), remember);
  if (recent_.evicted_early() != early) {
    static LogLimiter limiter(1, absl::Seconds(10));
    if (uint64_t held = 0; limiter.Allow(&held)) {
      spdlog::warn("bus: {} command IDs remembered, the bound: the oldest let go before their time", recent_.size());
    }
  }
  if (!first) {
    if (repeated_ != nullptr) repeated_->Increment();
    spdlog::debug("bus: {} heard again; already done", request.request_id());
  }
  return first;
}

void BusHandler::Send(const std::string& reply_to, v1::BusReply reply, bool now) {
  const size_t limit = bus_->MaxPayload() > 4096 ? bus_->MaxPayload() - 1024 : bus_->MaxPayload();
  const absl::Time at = absl::Now();
  for (auto& part : SplitReply(std::move(reply), limit)) {
    std::string data = part.SerializeAsString();
    // Signed with the asking replica's key, so that only this gateway can
    // answer as itself. Before that replica's welcome has brought its key:
    // unsigned (it is not believed), and sent again signed when the key
    // comes (AnswerKeys), from the control link's thread.
    if (keys_ != nullptr && !keys_->Sign(reply_to, &data, at)) {
      spdlog::debug("bus: answer to {} unsigned: no key from that replica yet", reply_to);
    }
    // From the loop: written there, no hand-off to the sender thread (a
    // wake-up on the answer's path), never waiting on the socket.
    auto st = now ? bus_->PublishNow(reply_to, data) : bus_->PublishFromLoop(reply_to, data);
    if (!st.ok()) {
      // Control names this gateway as missing; nothing else to do here.
      spdlog::warn("bus: reply not sent: {}", std::string(st.message()));
      break;
    }
  }
}

}  // namespace switchboard::gateway
