#pragma once

#include <array>

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/dispatcher.h"
#include "common/nats_client.h"
#include "gateway/answer_keys.h"
#include "gateway/hub.h"
#include "gateway/recent_ids.h"

namespace prometheus {
class Counter;
class Histogram;
}  // namespace prometheus

namespace switchboard {
class Metrics;
}  // namespace switchboard

namespace switchboard::gateway {

// Splits an answer into messages of at most `max_bytes` encoded (see
// BusReply.part). Any thread.
std::vector<v1::BusReply> SplitReply(v1::BusReply reply, size_t max_bytes);

// Receives control's broadcasts and publishes the hub's answer to the
// request's reply subject (in parts when it is larger than the bus
// carries). Queries (a user's sessions) are answered on the NATS thread from
// the session index's thread-safe read. Commands run on the loop: those on
// the commands subject are read there, from the loop's own NATS connection
// (NatsClient::SubscribeOnLoop); those on the gateways subject are posted to
// it by the NATS thread. A command heard twice runs once (FirstTime).
class BusHandler {
 public:
  // `keys`: each replica's answer key, to sign answers with (null: unsigned).
  BusHandler(NatsClient* bus, Dispatcher* loop, Hub* hub, AnswerKeys* keys = nullptr)
      : bus_(bus), loop_(loop), hub_(hub), keys_(keys) {}
  absl::Status Start(const std::string& cluster);
  uint64_t malformed() const { return malformed_.load(); }
  // The loop's own connection is up and has heard control's beacon on the
  // commands subject within `window`: commands sent there reach the loop.
  // Any thread.
  bool CommandsOnLoop(absl::Duration window) const;
  // Counts requests by operation and times them (received to answered) in
  // `metrics`, which outlives the handler. Before Start().
  void EnableMetrics(Metrics* metrics);

 private:
  // On the bus thread.
  void OnMessage(const std::string& reply_to, const std::string& data);
  // On the loop, from its own connection (NatsClient::SubscribeOnLoop).
  void OnLoopMessage(const std::string& reply_to, const std::string& data);
  // `now`: from a bus thread, sent on it; otherwise from the loop, written
  // there without waiting on the socket (NatsClient::PublishFromLoop).
  void Send(const std::string& reply_to, v1::BusReply reply, bool now);

  NatsClient* bus_;
  Dispatcher* loop_;
  Hub* hub_;
  AnswerKeys* keys_;
  std::atomic<uint64_t> malformed_{0};
  std::atomic<int64_t> last_beacon_ns_{0};  // Unix ns; 0: never
  // Per BusRequest operation (its oneof case, or kOther): prometheus-cpp's
  // counters and histograms are safe from any thread.
  enum Op { kUserQuery, kTerminate, kDisconnect, kSend, kOther, kOps };
  static Op OpOf(const v1::BusRequest& request);
  struct OpMetrics {
    prometheus::Counter* requests = nullptr;
    prometheus::Histogram* seconds = nullptr;
  };
  std::array<OpMetrics, kOps> op_metrics_{};
  prometheus::Counter* repeated_ = nullptr;
  prometheus::Counter* malformed_metric_ = nullptr;
  void Handled(Op op, absl::Time received);
  // On the loop: the command run, its answer sent.
  void RunCommand(const v1::BusRequest& request, const std::string& reply_to, Op op, absl::Time received);
  // Commands run once: control asks again a gateway that came back on the
  // bus, and this one may have heard the first time. Each ID is kept as
  // long as the request says it may be asked again (remember_ms), or
  // kDefaultRemember from replicas that do not say (control's longest
  // default deadline, and a second).
  static constexpr absl::Duration kDefaultRemember = absl::Seconds(11);
  // False (counted, and logged at debug) for a command heard before.
  bool FirstTime(const v1::BusRequest& request);
  // An unreadable message, or one without a reply subject: counted, the
  // first one logged.
  void DropMalformed();
  absl::Mutex recent_mu_;
  RecentIds recent_ ABSL_GUARDED_BY(recent_mu_);
};

}  // namespace switchboard::gateway
