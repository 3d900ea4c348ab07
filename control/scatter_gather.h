#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/nats_client.h"
#include "common/timer_queue.h"
#include "switchboard/v1/bus.pb.h"

namespace switchboard {
class Metrics;
}  // namespace switchboard

namespace switchboard::control {

struct GatherResult {
  std::vector<std::string> asked;     // live gateways when the call started
  std::map<std::string, v1::BusReply> answers;  // by gateway ID (may include unasked ones)
  // Asked but did not answer in time, left the fleet before answering, or
  // answered an error (asked or not): each did not do the job.
  std::vector<std::string> missing;
  std::map<std::string, std::string> missing_reasons;  // by gateway ID, for each of `missing`
  // Every asked gateway answered and this replica knew the whole fleet.
  bool complete = false;
  std::string incomplete_reason;      // why not, when not
};

// Broadcasts one request to every gateway over the bus and gathers the
// answers until each gateway live at the start has answered or the deadline
// passes; then calls `done` exactly once, on a bus or timer thread. Never
// waits on the network itself. Thread-safe.
//
// Honesty rules: a terminate or disconnect is always published, even when
// the fleet looks empty; answers from gateways that were not asked, or are
// not members (a gateway cut from this replica but still on the bus), count;
// an answer carrying an error is a gateway that did not act: missing, with
// its reason; while the replica cannot know the whole fleet (`readiness`
// names why), the result is never complete.
class ScatterGather {
 public:
  using Done = std::function<void(absl::StatusOr<GatherResult>)>;
  using LiveFn = std::function<std::vector<std::string>()>;
  // "" when this replica knows the fleet; otherwise why it cannot yet.
  using ReadinessFn = std::function<std::string()>;
  // How long a call waits for unknown gateways when it knows of none.
  static constexpr absl::Duration kUnknownFleetWindow = absl::Milliseconds(250);
  // How long a command waits, at most, for the commands published on the
  // other subject to be answered before it changes subject (see Admit).
  static constexpr absl::Duration kRouteSwitchWait = absl::Milliseconds(200);

  // Whether an answer for `gateway_id` comes from it: the answer's bytes
  // and its MAC (empty when it carries none). Any thread; must be quick.
  using AuthFn =
      std::function<bool(const std::string& gateway_id, std::string_view body, std::string_view mac)>;
  // Only the first answer of each gateway counts, and with `auth` only one
  // it authenticates (without, every answer is believed).
  ScatterGather(NatsClient* bus, TimerQueue* timers, LiveFn live, std::string subject,
                ReadinessFn readiness = nullptr, AuthFn auth = nullptr);
  ~ScatterGather();
  // This replica's reply subject (after Start): gateways answer there.
  const std::string& inbox() const { return inbox_; }
  // Answers thrown away because they did not come from the gateway they name.
  uint64_t unauthenticated() const { return unauthenticated_.load(); }
  // Calls beyond `max_in_flight` at once fail with RESOURCE_EXHAUSTED. A
  // request larger than the bus carries fails with INVALID_ARGUMENT.
  void set_max_in_flight(size_t max_in_flight) { max_in_flight_ = max_in_flight; }
  // Before Start(): this replica's inbox goes under `prefix` (the subjects
  // the bus lets gateways answer on) instead of the library's own inbox.
  void set_reply_prefix(std::string prefix) { reply_prefix_ = std::move(prefix); }
  // Before Start(): a command (terminate, disconnect, send) goes to
  // `subject` instead of the gateways subject when `route` says that every
  // gateway asked reads it (their event loops do, from a NATS connection of
  // their own); otherwise, and without this, on the gateways subject.
  // Commands stay in the order they were called across a change of subject:
  // the first one on the new subject waits (kRouteSwitchWait at most) until
  // those still in flight on the old one are answered, and later ones queue
  // behind it, so that no gateway reads a command from its loop's connection
  // before it has run an earlier one from its NATS thread's, or the reverse.
  using RouteFn = std::function<bool(const std::vector<std::string>& asked)>;
  void set_commands_subject(std::string subject, RouteFn route) {
    commands_subject_ = std::move(subject);
    commands_route_ = std::move(route);
  }
  // On the commands subject (if set), a request with no operation and no
  // reply subject: a gateway whose loop hears these says so in its load
  // reports (GatewayLoad.commands_on_loop), which proves the whole way, the
  // NATS permissions included. Call it every half heartbeat. Any thread.
  void SendBeacon();
  // Subscribes to this replica's reply inbox.
  absl::Status Start();

  void Call(v1::BusRequest request, absl::Time deadline, Done done);
  // At shutdown: every call in flight ends now with `why` (an error), later
  // ones at once; returns when no other thread is still inside a `done`.
  void Close(const absl::Status& why);
  // At shutdown, before Close: waits until no call is in flight (each ends
  // by its deadline) or `max` passed; true if none is left.
  bool WaitIdle(absl::Duration max);

  // A gateway left the fleet (detached, lease expired): calls waiting on it
  // stop waiting and name it as missing. Any thread but a `done`'s.
  void MemberLeft(const std::string& gateway_id);
  // A gateway is (back) on the bus: the calls still waiting for its answer
  // are published again (it may have missed them while off the bus; a
  // gateway runs a command once however often it hears it). Any thread.
  void Reask(const std::string& gateway_id);
  // Requests published again by Reask.
  uint64_t reasked() const { return reasked_.load(); }
  // Commands that waited for a change of subject (see set_commands_subject).
  uint64_t route_waits() const { return route_waits_.load(); }

  size_t in_flight() const;

  // Counts every gather in `metrics` (outliving this): by operation and
  // outcome, its duration, the gateways asked, answered and missing (by
  // kind of reason), incomplete answers by reason. Before the first Call.
  void EnableMetrics(Metrics* metrics);

 private:
  // The operation's label (the request's oneof case).
  static const char* OpOf(const v1::BusRequest& request);
  struct GatherMetrics;
  std::unique_ptr<GatherMetrics> metrics_;

  struct Pending {
    const char* op = "other";
    absl::Time started;
    std::set<std::string> errored;  // gateways that answered an error
    std::vector<std::string> asked;
    std::string not_ready;  // readiness at the start; "" = the fleet was known
    std::map<std::string, v1::BusReply> answers;
    // Gateways that will not answer this call, and why (an error answer, or
    // they left the fleet).
    std::map<std::string, std::string> failed;
    // Asked gateways whose answer could not be authenticated (named as the
    // reason if no authentic one comes).
    std::set<std::string> forged;
    // Answers arriving in parts, by gateway, until the last part is in.
    std::map<std::string, std::pair<v1::BusReply, std::vector<bool>>> partial;
    Done done;
    uint64_t timer = 0;
    std::string wire;  // the request as published
    const std::string* subject = nullptr;  // where (subject_ or commands_subject_)
    std::string request_id;
    // A command: published (or held back, see Admit) on route_'s generation
    // `route_gen`.
    bool command = false;
    bool published = false;
    bool settled = false;  // every gateway asked answered (see SettleLocked)
    uint64_t route_gen = 0;
    absl::Time held_since;
  };
  // Counts a finished gather (p: null for one that asked nobody).
  void Record(const char* op, absl::Time started, const GatherResult& result, const Pending* p);
  void OnReply(const std::string& subject, const std::string& data);
  void Finish(const std::string& request_id, bool timed_out);
  // Every asked gateway answered or failed (false while nobody was asked:
  // then only the window ends the call).
  static bool AllIn(const Pending& p);
  // Takes a call out of pending_ (nullptr if it is gone already) and counts
  // it in in_done_ until DoneReturned() says its `done` has returned.
  std::shared_ptr<Pending> Take(const std::string& request_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DoneReturned();
  // Under mu_: whether command `p` may be published now on its subject
  // (counted as in flight on the route); if not, it is queued in held_.
  bool AdmitLocked(const std::shared_ptr<Pending>& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CountLocked(Pending* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Under mu_: a command every asked gateway has answered (authentic or
  // not: it ran it) or left no longer holds back a change of subject; true
  // if that was the last one in flight.
  bool SettleLocked(Pending* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Publishes the held commands that may go now, in order (one thread at a
  // time); arms a timer for the first that must still wait.
  void ReleaseHeld();
  void OnHoldTimer();
  // Publishes a call's request; if the bus refuses it, ends the call.
  void Publish(const std::shared_ptr<Pending>& p);

  NatsClient* bus_;
  TimerQueue* timers_;
  LiveFn live_;
  const std::string subject_;
  ReadinessFn readiness_;
  AuthFn auth_;
  std::atomic<uint64_t> unauthenticated_{0};
  std::atomic<uint64_t> reasked_{0};
  std::atomic<int64_t> unauthenticated_logged_ms_{0};
  size_t max_in_flight_ = 10000;
  std::string reply_prefix_;
  std::string commands_subject_;
  RouteFn commands_route_;
  std::string inbox_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Pending>> pending_ ABSL_GUARDED_BY(mu_);
  absl::Status closed_ ABSL_GUARDED_BY(mu_);  // not OK once closed
  int in_done_ ABSL_GUARDED_BY(mu_) = 0;      // calls taken out of pending_ whose done has not returned
  // The subject commands go to now, its generation (one per change) and
  // how many published there are still in flight; the commands waiting for a
  // change of subject, in call order.
  const std::string* route_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t route_gen_ ABSL_GUARDED_BY(mu_) = 0;
  int route_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<std::shared_ptr<Pending>> held_ ABSL_GUARDED_BY(mu_);
  bool releasing_ ABSL_GUARDED_BY(mu_) = false;      // a thread is in ReleaseHeld
  uint64_t hold_timer_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> route_waits_{0};
  bool IdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending_.empty() && in_done_ == 0; }
};

}  // namespace switchboard::control
