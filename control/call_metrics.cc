#include "control/call_metrics.h"

#include "common/metrics.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace switchboard::control {

class CallMetrics::Timed final : public UnaryResponder {
 public:
  Timed(CallMetrics* metrics, const char* method, UnaryResponder* done)
      : metrics_(metrics), method_(method), done_(done), started_(absl::Now()) {
    metrics_->in_flight_->Increment();
  }
  void Finish(const grpc::Status& status) override {
    const double seconds = absl::ToDoubleSeconds(absl::Now() - started_);
    metrics_->in_flight_->Decrement();
    metrics_->calls_->Add({{"method", method_}, {"code", CodeName(status.error_code())}}).Increment();
    metrics_->seconds_->Add({{"method", method_}}, kBounds).Observe(seconds);
    UnaryResponder* done = done_;
    delete this;
    done->Finish(status);
  }

 private:
  static inline const prometheus::Histogram::BucketBoundaries kBounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                                      0.05,   0.1,   0.25,   0.5,   1,    2.5, 5};
  CallMetrics* metrics_;
  const char* method_;
  UnaryResponder* done_;
  absl::Time started_;
};

CallMetrics::CallMetrics(Metrics* metrics)
    : calls_(&prometheus::BuildCounter()
                  .Name("switchboard_control_calls_total")
                  .Help("Server API calls answered, by method and gRPC status")
                  .Register(metrics->registry())),
      seconds_(&prometheus::BuildHistogram()
                    .Name("switchboard_control_call_duration_seconds")
                    .Help("Server API calls from arrival to answer (the gather included), by method")
                    .Register(metrics->registry())),
      in_flight_(&prometheus::BuildGauge()
                      .Name("switchboard_control_calls_in_flight")
                      .Help("Server API calls started and not yet answered")
                      .Register(metrics->registry())
                      .Add({})) {}

UnaryResponder* CallMetrics::Wrap(const char* method, UnaryResponder* done) { return new Timed(this, method, done); }

const char* CallMetrics::CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    default: return "UNKNOWN";
  }
}

}  // namespace switchboard::control
