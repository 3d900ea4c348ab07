#pragma once

#include <string>

#include "absl/time/time.h"
#include "control/cq_server.h"

namespace prometheus {
class Gauge;
template <typename T>
class Family;
class Counter;
class Histogram;
}  // namespace prometheus

namespace switchboard {
class Metrics;
}  // namespace switchboard

namespace switchboard::control {

// The API's calls in the metrics: switchboard_control_calls_total{method,
// code} (the gRPC status name), switchboard_control_call_duration_seconds
// {method} and switchboard_control_calls_in_flight. Methods are the
// service's own names; codes gRPC's seventeen. Thread-safe.
class CallMetrics {
 public:
  explicit CallMetrics(Metrics* metrics);
  // A responder that records the call when it finishes, then hands the
  // status to `done` (and deletes itself). Call when the call starts.
  UnaryResponder* Wrap(const char* method, UnaryResponder* done);

  static const char* CodeName(grpc::StatusCode code);

 private:
  class Timed;
  prometheus::Family<prometheus::Counter>* calls_;
  prometheus::Family<prometheus::Histogram>* seconds_;
  prometheus::Gauge* in_flight_;
};

}  // namespace switchboard::control
