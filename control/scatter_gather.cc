#include "control/scatter_gather.h"

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/answer_mac.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "spdlog/spdlog.h"

namespace switchboard::control {

namespace {
// Bound on the parts of one gateway's answer (a 1 MiB payload each).
constexpr uint32_t kMaxParts = 4096;
}  // namespace

ScatterGather::ScatterGather(NatsClient* bus, TimerQueue* timers, LiveFn live, std::string subject,
                             ReadinessFn readiness, AuthFn auth)
    : bus_(bus),
      timers_(timers),
      live_(std::move(live)),
      subject_(std::move(subject)),
      readiness_(std::move(readiness)),
      auth_(std::move(auth)) {}

absl::Status ScatterGather::Start() {
  inbox_ = reply_prefix_.empty() ? bus_->NewInbox() : reply_prefix_ + "." + NewUuid();
  // One reply subject for every call of this replica (answers carry the
  // request ID): nats-server resolves a subject it has seen before from its
  // caches, where a new subject per call cost it a full match each time.
  return bus_->Subscribe(inbox_, [this](const std::string& subject, const std::string&, const std::string& data) {
    OnReply(subject, data);
  });
}

size_t ScatterGather::in_flight() const {
  absl::MutexLock lock(&mu_);
  return pending_.size();
}

void ScatterGather::Call(v1::BusRequest request, absl::Time deadline, Done done) {
  if (!bus_->Connected()) {
    done(absl::UnavailableError("message bus unavailable"));
    return;
  }
  // The caller's ID for the request (it names the call in every log line,
  // control's and the gateways'), or a new one. Unique either way: gateways
  // run a command once per ID.
  const std::string request_id = request.request_id().empty() ? NewUuid() : request.request_id();
  request.set_format_version(1);
  request.set_request_id(request_id);
  // The reply subject rides along; leave it room.
  const size_t limit = bus_->MaxPayload() > 512 ? bus_->MaxPayload() - 512 : 0;
  if (request.ByteSizeLong() > limit) {
    done(absl::InvalidArgumentError(absl::StrCat("request is ", request.ByteSizeLong(),
                                                 " bytes encoded; the bus carries at most ", limit)));
    return;
  }
  if (in_flight() >= max_in_flight_) {
    done(absl::ResourceExhaustedError(absl::StrCat(max_in_flight_, " fleet calls are in flight; try again")));
    return;
  }
  const bool command = request.has_terminate() || request.has_disconnect() || request.has_send();
  auto pending = std::make_shared<Pending>();
  pending->op = OpOf(request);
  pending->started = absl::Now();
  pending->asked = live_();
  pending->not_ready = readiness_ ? readiness_() : "";
  pending->done = std::move(done);
  pending->request_id = request_id;
  pending->command = command;
  // Only to a fleet known whole, every member of which reads it: a gateway
  // not known yet (after a restart) hears the gateways subject.
  pending->subject = command && commands_route_ && pending->not_ready.empty() && !pending->asked.empty() &&
                             commands_route_(pending->asked)
                         ? &commands_subject_
                         : &subject_;
  if (pending->asked.empty() && pending->not_ready.empty()) {
    // The fleet is known to be empty. A command still goes out (cheap, and
    // it reaches a gateway this replica cannot know of); nobody to wait for.
    if (command) (void)bus_->Publish(subject_, request.SerializeAsString(), "");
    GatherResult result;
    result.complete = true;
    Record(pending->op, pending->started, result, nullptr);
    pending->done(std::move(result));
    return;
  }
  if (pending->asked.empty()) {
    // Nobody known, but the fleet is not known: gather whoever answers for a
    // short window.
    deadline = std::min(deadline, absl::Now() + kUnknownFleetWindow);
  }
  {
    absl::ReleasableMutexLock lock(&mu_);
    if (!closed_.ok()) {
      const absl::Status why = closed_;
      lock.Release();
      pending->done(why);
      return;
    }
    pending_[request_id] = pending;
    bus_->SetAwaitingAnswers(static_cast<int>(pending_.size()));
  }
  // Arm the deadline before publishing so a fast answer always finds it.
  uint64_t timer = timers_->Schedule(deadline, [this, request_id] { Finish(request_id, true); });
  {
    absl::MutexLock lock(&mu_);
    pending->timer = timer;
  }
  if (command) {
    // A re-ask can come until the deadline: gateways keep the ID that long
    // (and a second more for the bus's own delay).
    const int64_t left_ms = absl::ToInt64Milliseconds(absl::Ceil(deadline - absl::Now(), absl::Milliseconds(1)));
    request.set_remember_ms(static_cast<uint32_t>(std::clamp<int64_t>(left_ms, 0, 3600 * 1000) + 1000));
  }
  pending->wire = request.SerializeAsString();
  if (command) {
    {
      absl::MutexLock lock(&mu_);
      auto it = pending_.find(request_id);
      if (it == pending_.end() || it->second != pending) return;  // ended already (a deadline in the past)
      if (!AdmitLocked(pending)) return;  // waits for a change of subject
    }
  }
  Publish(pending);
}

void ScatterGather::Publish(const std::shared_ptr<Pending>& pending) {
  auto st = bus_->PublishNow(*pending->subject, pending->wire, inbox_);
  if (st.ok()) return;
  std::shared_ptr<Pending> p;
  {
    absl::MutexLock lock(&mu_);
    p = Take(pending->request_id);
  }
  if (p == nullptr) return;
  if (p->timer != 0) timers_->Cancel(p->timer);
  p->done(absl::UnavailableError(std::string("message bus unavailable: ") + std::string(st.message())));
  DoneReturned();
  ReleaseHeld();
}

bool ScatterGather::AdmitLocked(const std::shared_ptr<Pending>& p) {
  if (!held_.empty() || releasing_) {
    // Behind commands already waiting (or being published): in call order.
    p->held_since = absl::Now();
    held_.push_back(p);
    return false;
  }
  if (route_ != nullptr && p->subject != route_ && route_in_flight_ > 0) {
    // A change of subject while commands sent on the old one are still in
    // flight: a gateway reads the two subjects on different threads and
    // could run this one first. Wait until they are answered (or
    // kRouteSwitchWait, past which their gateways are late anyway).
    p->held_since = absl::Now();
    held_.push_back(p);
    route_waits_.fetch_add(1);
    if (hold_timer_ == 0) {
      hold_timer_ = timers_->Schedule(p->held_since + kRouteSwitchWait, [this] { OnHoldTimer(); });
    }
    return false;
  }
  CountLocked(p.get());
  return true;
}

bool ScatterGather::SettleLocked(Pending* p) {
  if (!p->command || !p->published || p->settled || p->route_gen != route_gen_) return false;
  for (const auto& id : p->asked) {
    if (!p->answers.count(id) && !p->failed.count(id) && !p->forged.count(id) && !p->partial.count(id)) return false;
  }
  p->settled = true;
  --route_in_flight_;
  return route_in_flight_ == 0;
}

void ScatterGather::CountLocked(Pending* p) {
  if (p->subject != route_) {
    // Rare (a gateway joins, leaves, drains, or its loop's connection
    // comes or goes): worth a line.
    spdlog::info("bus: commands now go to {}", *p->subject);
    route_ = p->subject;
    ++route_gen_;
    route_in_flight_ = 0;
  }
  p->route_gen = route_gen_;
  p->published = true;
  ++route_in_flight_;
}

void ScatterGather::OnHoldTimer() {
  {
    absl::MutexLock lock(&mu_);
    hold_timer_ = 0;
    if (!closed_.ok()) return;
    ++in_done_;  // the destructor waits for this thread to leave
  }
  ReleaseHeld();
  DoneReturned();
}

void ScatterGather::ReleaseHeld() {
  {
    absl::MutexLock lock(&mu_);
    if (releasing_ || held_.empty()) return;  // the thread releasing looks again before it leaves
    releasing_ = true;
  }
  for (;;) {
    std::shared_ptr<Pending> next;
    {
      absl::MutexLock lock(&mu_);
      while (next == nullptr) {
        if (held_.empty()) {
          releasing_ = false;
          return;
        }
        std::shared_ptr<Pending> head = held_.front();
        auto it = pending_.find(head->request_id);
        if (it == pending_.end() || it->second != head) {  // its deadline ended it meanwhile
          held_.pop_front();
          continue;
        }
        if (route_ != nullptr && head->subject != route_ && route_in_flight_ > 0 &&
            absl::Now() < head->held_since + kRouteSwitchWait) {
          // Still waiting: the last answer on the old subject, or the timer,
          // calls this again.
          if (hold_timer_ == 0) {
            hold_timer_ = timers_->Schedule(head->held_since + kRouteSwitchWait, [this] { OnHoldTimer(); });
          }
          releasing_ = false;
          return;
        }
        held_.pop_front();
        CountLocked(head.get());
        next = std::move(head);
      }
    }
    Publish(next);
  }
}

std::shared_ptr<ScatterGather::Pending> ScatterGather::Take(const std::string& request_id) {
  auto it = pending_.find(request_id);
  if (it == pending_.end()) return nullptr;
  std::shared_ptr<Pending> p = std::move(it->second);
  pending_.erase(it);
  if (p->command && p->published && !p->settled && p->route_gen == route_gen_) --route_in_flight_;
  // Under the lock so counts never go out of order (an atomic store).
  bus_->SetAwaitingAnswers(static_cast<int>(pending_.size()));
  ++in_done_;
  return p;
}

void ScatterGather::DoneReturned() {
  absl::MutexLock lock(&mu_);
  --in_done_;
}

void ScatterGather::Close(const absl::Status& why) {
  const absl::Status status = why.ok() ? absl::UnavailableError("closed") : why;
  std::vector<std::pair<std::shared_ptr<Pending>, uint64_t>> left;  // with its timer
  {
    absl::MutexLock lock(&mu_);
    closed_ = status;
    for (auto& [id, p] : pending_) left.emplace_back(p, p->timer);
    pending_.clear();
    held_.clear();
    if (hold_timer_ != 0) timers_->Cancel(hold_timer_);
    hold_timer_ = 0;
    bus_->SetAwaitingAnswers(0);
  }
  for (auto& [p, timer] : left) {
    if (timer != 0) timers_->Cancel(timer);
    p->done(status);
  }
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(+[](int* n) { return *n == 0; }, &in_done_));
}

bool ScatterGather::WaitIdle(absl::Duration max) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(this, &ScatterGather::IdleLocked), max);
}

void ScatterGather::OnReply(const std::string& subject, const std::string& data) {
  v1::BusReply reply;
  if (!reply.ParseFromString(data) || reply.gateway_id().empty()) {
    spdlog::warn("bus: malformed reply on {}", subject);
    return;
  }
  const std::string request_id = reply.request_id();
  const std::string gw = reply.gateway_id();
  bool authentic = true;
  bool unsigned_answer = false;
  if (auth_) {
    std::string_view body, mac;
    if (!SplitSignedAnswer(data, &body, &mac)) body = data;
    authentic = auth_(gw, body, mac);
    unsigned_answer = mac.empty();
  }
  bool all_in = false;
  // Once every gateway asked has answered a command, authentic or not, it
  // has run it: commands waiting for a change of subject may go (after the
  // lock is let go, on every way out below).
  bool settled = false;
  auto release = absl::MakeCleanup([this, &settled] {
    if (settled) ReleaseHeld();
  });
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(request_id);
    if (it == pending_.end()) return;  // late: the call already finished
    auto& p = *it->second;
    auto settle = absl::MakeCleanup([this, &p, &settled]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      settled = SettleLocked(&p);
    });
    if (!authentic) {
      // Someone on the bus answering for a gateway it is not (or a gateway
      // this replica has no key of): never counted; the gateway, if asked,
      // stays missing until its own answer comes.
      p.forged.insert(gw);
      const int64_t now_ms = absl::ToUnixMillis(absl::Now());
      ++unauthenticated_;
      int64_t last = unauthenticated_logged_ms_.load();
      if (now_ms - last >= 10000 && unauthenticated_logged_ms_.compare_exchange_strong(last, now_ms)) {
        // Unsigned: a gateway this replica has not welcomed (cut from it,
        // or its welcome still on the way: it answers again, signed, once
        // the key is in); signed with another key: someone else.
        spdlog::warn("bus: an answer naming gateway {} could not be authenticated and was dropped ({}; {} so far)", gw,
                     unsigned_answer ? "unsigned: this replica's welcome has not reached it, or it is not attached here"
                                     : "its MAC does not match this replica's key for it",
                     unauthenticated_.load());
      }
      return;
    }
    // The first answer of a gateway stands; a second one is not counted again.
    if (p.answers.count(gw) || p.failed.count(gw)) return;
    if (reply.parts() > 1) {
      if (reply.part() >= reply.parts() || reply.parts() > kMaxParts) return;
      auto& [merged, seen] = p.partial[gw];
      if (seen.empty()) seen.assign(reply.parts(), false);
      if (seen.size() != reply.parts() || seen[reply.part()]) return;
      seen[reply.part()] = true;
      if (reply.part() == 0) {
        merged.set_format_version(reply.format_version());
        merged.set_request_id(reply.request_id());
        merged.set_gateway_id(gw);
        merged.set_closed(reply.closed());
        merged.set_error(reply.error());
      }
      for (auto& s : *reply.mutable_sessions()) *merged.add_sessions() = std::move(s);
      if (std::find(seen.begin(), seen.end(), false) != seen.end()) return;  // more parts to come
      reply = std::move(merged);
      p.partial.erase(gw);
    }
    if (!reply.error().empty()) {
      // It did not do the job (an older gateway that does not know the
      // operation, a request it could not act on): its sessions are unknown.
      p.failed.emplace(gw, "answered with an error: " + reply.error());
      p.errored.insert(gw);
    } else {
      p.answers.emplace(gw, std::move(reply));
    }
    all_in = AllIn(p);
  }
  if (all_in) Finish(request_id, false);
}

bool ScatterGather::AllIn(const Pending& p) {
  return !p.asked.empty() && std::all_of(p.asked.begin(), p.asked.end(), [&p](const std::string& id) {
    return p.answers.count(id) > 0 || p.failed.count(id) > 0;
  });
}

void ScatterGather::MemberLeft(const std::string& gateway_id) {
  std::vector<std::string> done;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, p] : pending_) {
      if (p->answers.count(gateway_id) || p->failed.count(gateway_id)) continue;
      if (std::find(p->asked.begin(), p->asked.end(), gateway_id) == p->asked.end()) continue;
      p->failed.emplace(gateway_id, "left the fleet during the call");
      if (AllIn(*p)) done.push_back(id);
    }
  }
  for (const auto& id : done) Finish(id, false);
}

void ScatterGather::Reask(const std::string& gateway_id) {
  std::vector<std::pair<std::string, const std::string*>> wires;  // the request, its subject
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, p] : pending_) {
      if (p->wire.empty() || p->answers.count(gateway_id) || p->failed.count(gateway_id) ||
          p->partial.count(gateway_id)) {
        continue;
      }
      if (std::find(p->asked.begin(), p->asked.end(), gateway_id) == p->asked.end()) continue;
      wires.emplace_back(p->wire, p->subject);
    }
  }
  if (wires.empty()) return;
  spdlog::info("bus: {} is back on the bus; asking it again {} call(s) it may have missed", gateway_id, wires.size());
  for (const auto& [wire, subject] : wires) (void)bus_->Publish(*subject, wire, inbox_);
  reasked_.fetch_add(wires.size());
}

struct ScatterGather::GatherMetrics {
  prometheus::Family<prometheus::Counter>* gathers;
  prometheus::Family<prometheus::Histogram>* seconds;
  prometheus::Family<prometheus::Counter>* asked;
  prometheus::Family<prometheus::Counter>* answered;
  prometheus::Family<prometheus::Counter>* missing;
  prometheus::Family<prometheus::Counter>* incomplete;
};

ScatterGather::~ScatterGather() {
  // A `done` still running on another thread (the timer's, when a call's
  // deadline ends it) touches this object once it returns (DoneReturned):
  // wait for every one of them. Only this object's own members: the bus and
  // the timers may be gone already (Close() is the shutdown, called first).
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(+[](int* n) { return *n == 0; }, &in_done_));
}

void ScatterGather::SendBeacon() {
  if (commands_subject_.empty()) return;
  v1::BusRequest beacon;
  beacon.set_format_version(1);
  (void)bus_->Publish(commands_subject_, beacon.SerializeAsString(), "");
}

const char* ScatterGather::OpOf(const v1::BusRequest& request) {
  switch (request.op_case()) {
    case v1::BusRequest::kUserQuery: return "user_query";
    case v1::BusRequest::kTerminate: return "terminate";
    case v1::BusRequest::kDisconnect: return "disconnect";
    case v1::BusRequest::kSend: return "send";
    default: return "other";
  }
}

void ScatterGather::EnableMetrics(Metrics* metrics) {
  auto& r = metrics->registry();
  metrics_ = std::make_unique<GatherMetrics>(GatherMetrics{
      &prometheus::BuildCounter()
           .Name("switchboard_control_gathers_total")
           .Help("Fleet gathers (one per API call that asks the gateways), by operation and outcome "
                 "(complete, or incomplete: the answer names what is missing)")
           .Register(r),
      &prometheus::BuildHistogram()
           .Name("switchboard_control_gather_duration_seconds")
           .Help("From publishing a request on the bus to the last answer in (or the deadline), by operation")
           .Register(r),
      &prometheus::BuildCounter()
           .Name("switchboard_control_gateways_asked_total")
           .Help("Gateways asked, summed over gathers, by operation")
           .Register(r),
      &prometheus::BuildCounter()
           .Name("switchboard_control_gateways_answered_total")
           .Help("Gateways that answered in time, summed over gathers, by operation")
           .Register(r),
      &prometheus::BuildCounter()
           .Name("switchboard_control_gateways_missing_total")
           .Help("Gateways named as missing in an answer, by operation and reason (timeout, left_fleet, error, "
                 "unauthenticated)")
           .Register(r),
      &prometheus::BuildCounter()
           .Name("switchboard_control_incomplete_answers_total")
           .Help("Answers that said they were incomplete, by operation and reason (gateways_missing, "
                 "fleet_unknown: this replica did not know the whole fleet yet)")
           .Register(r),
  });
  // Every series a dashboard or an alert divides by exists from the start,
  // at 0: a rate over a series that appears with its first event has no
  // data until the next scrape.
  for (const char* op : {"user_query", "terminate", "disconnect", "send"}) {
    for (const char* result : {"complete", "incomplete"}) metrics_->gathers->Add({{"op", op}, {"result", result}});
    metrics_->asked->Add({{"op", op}});
    metrics_->answered->Add({{"op", op}});
    for (const char* why : {"timeout", "left_fleet", "error", "unauthenticated"}) {
      metrics_->missing->Add({{"op", op}, {"reason", why}});
    }
    for (const char* why : {"gateways_missing", "fleet_unknown"}) {
      metrics_->incomplete->Add({{"op", op}, {"reason", why}});
    }
  }
}

void ScatterGather::Record(const char* op, absl::Time started, const GatherResult& result, const Pending* p) {
  if (metrics_ == nullptr) return;
  static const prometheus::Histogram::BucketBoundaries kBounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                               0.1,    0.25,  0.5,    1,     2.5,  5};
  metrics_->gathers->Add({{"op", op}, {"result", result.complete ? "complete" : "incomplete"}}).Increment();
  metrics_->seconds->Add({{"op", op}}, kBounds).Observe(absl::ToDoubleSeconds(absl::Now() - started));
  metrics_->asked->Add({{"op", op}}).Increment(static_cast<double>(result.asked.size()));
  size_t answered = 0;
  for (const auto& id : result.asked) answered += result.answers.count(id) > 0 ? 1 : 0;
  metrics_->answered->Add({{"op", op}}).Increment(static_cast<double>(answered));
  for (const auto& id : result.missing) {
    const char* why = "timeout";
    if (p != nullptr && p->errored.count(id) > 0) {
      why = "error";
    } else if (p != nullptr && p->failed.count(id) > 0) {
      why = "left_fleet";
    } else if (p != nullptr && p->forged.count(id) > 0) {
      why = "unauthenticated";
    }
    metrics_->missing->Add({{"op", op}, {"reason", why}}).Increment();
  }
  if (!result.complete) {
    const bool fleet_unknown = p != nullptr && !p->not_ready.empty();
    metrics_->incomplete->Add({{"op", op}, {"reason", fleet_unknown ? "fleet_unknown" : "gateways_missing"}})
        .Increment();
  }
}

void ScatterGather::Finish(const std::string& request_id, bool timed_out) {
  std::shared_ptr<Pending> p;
  uint64_t timer = 0;
  {
    absl::MutexLock lock(&mu_);
    p = Take(request_id);
    if (p == nullptr) return;  // the other path finished it
    timer = p->timer;
  }
  if (!timed_out && timer != 0) timers_->Cancel(timer);
  // A command waiting for this one's subject to fall quiet may go now.
  ReleaseHeld();
  GatherResult result;
  result.asked = p->asked;
  result.answers = std::move(p->answers);
  for (const auto& id : result.asked) {
    if (result.answers.count(id) > 0) continue;
    result.missing.push_back(id);
    auto f = p->failed.find(id);
    result.missing_reasons[id] = f != p->failed.end() ? f->second
                                 : p->forged.count(id)
                                     ? "its answer could not be authenticated (no key from this replica, or forged)"
                                     : "did not answer before the deadline";
  }
  // An unasked gateway that answered an error holds sessions nobody saw.
  for (const auto& [id, why] : p->failed) {
    if (result.missing_reasons.emplace(id, why).second) result.missing.push_back(id);
  }
  result.complete = result.missing.empty() && p->not_ready.empty();
  if (!p->not_ready.empty()) {
    result.incomplete_reason = p->not_ready;
  } else if (!result.missing.empty()) {
    std::string why;
    for (const auto& id : result.missing) {
      absl::StrAppend(&why, why.empty() ? "" : "; ", id, ": ", result.missing_reasons[id]);
    }
    result.incomplete_reason = "gateways missing (" + why + ")";
  }
  Record(p->op, p->started, result, p.get());
  p->done(std::move(result));
  DoneReturned();
}

}  // namespace switchboard::control
