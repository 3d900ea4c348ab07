#include "control/health_service.h"

#include <vector>

namespace switchboard::control {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch: the status now, then each change, until the caller goes or the
// server stops (then it ends the stream, UNAVAILABLE). Loop thread only; deletes
// itself once its write and its done tag are both back.
class HealthService::WatchCall final {
 public:
  static void Listen(HealthService* health) {
    auto* call = new WatchCall(health);
    call->ctx_.AsyncNotifyWhenDone(&call->done_ev_);
    health->async_.RequestWatch(&call->ctx_, &call->req_, &call->writer_, health->loop_->cq(),
                                health->loop_->cq(), &call->requested_ev_);
  }

  // The status changed (or is the first to send).
  void Update(Status status) {
    want_ = status;
    if (!writing_ && !done_ && want_ != sent_) Write();
  }

  // The replica is stopping: once the last status is out, the stream ends
  // (UNAVAILABLE: ask another replica), so that the server's shutdown does
  // not wait for watchers at its deadline.
  void End() {
    ending_ = true;
    if (!writing_) Finish();
  }

 private:
  explicit WatchCall(HealthService* health) : health_(health) {}

  void OnRequested(bool ok) {
    if (!ok) {  // the server is going away; no call came, nor will the done tag
      delete this;
      return;
    }
    outstanding_ = 1;  // the done tag
    if (health_->loop_->stopping()) return;
    Listen(health_);
    known_ = health_->Known(req_.service());
    health_->watchers_.insert(this);
    Update(known_ ? health_->Current() : HealthCheckResponse::SERVICE_UNKNOWN);
  }

  void Write() {
    if (health_->loop_->stopping()) return;
    HealthCheckResponse msg;
    msg.set_status(want_);
    sent_ = want_;
    writing_ = true;
    ++outstanding_;
    writer_.Write(msg, &write_ev_);
  }

  void OnWritten(bool ok) {
    --outstanding_;
    writing_ = false;
    if (ok && !done_ && want_ != sent_) {
      Write();
    } else if (ending_) {
      Finish();
    }
    MaybeDelete();
  }

  void Finish() {
    if (finished_ || done_ || health_->loop_->stopping()) return;
    finished_ = true;
    ++outstanding_;
    writer_.Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "this control replica is stopping"), &finish_ev_);
  }

  void OnFinished(bool) {
    --outstanding_;
    MaybeDelete();
  }

  void OnDone(bool) {
    --outstanding_;
    done_ = true;
    health_->watchers_.erase(this);
    MaybeDelete();
  }

  void MaybeDelete() {
    if (outstanding_ == 0) delete this;
  }

  HealthService* const health_;
  grpc::ServerContext ctx_;
  HealthCheckRequest req_;
  grpc::ServerAsyncWriter<HealthCheckResponse> writer_{&ctx_};
  MemberEvent<WatchCall, &WatchCall::OnRequested> requested_ev_{this};
  MemberEvent<WatchCall, &WatchCall::OnWritten> write_ev_{this};
  MemberEvent<WatchCall, &WatchCall::OnDone> done_ev_{this};
  MemberEvent<WatchCall, &WatchCall::OnFinished> finish_ev_{this};
  bool ending_ = false;
  bool finished_ = false;
  int outstanding_ = 0;
  bool known_ = false;
  bool writing_ = false;
  bool done_ = false;
  // Nothing sent yet: UNKNOWN is never what a watch says first.
  Status sent_ = HealthCheckResponse::UNKNOWN;
  Status want_ = HealthCheckResponse::UNKNOWN;

  friend class HealthService;
};

HealthService::HealthService()
    : check_([this](grpc::ServerContext*, const HealthCheckRequest* req, HealthCheckResponse* resp,
                    UnaryResponder* done) {
        if (!Known(req->service())) {
          done->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service"));
          return;
        }
        resp->set_status(Current());
        done->Finish(grpc::Status::OK);
      }),
      services_{"", "switchboard.v1.Control", "switchboard.v1.Registry"},
      status_(HealthCheckResponse::NOT_SERVING) {}

HealthService::~HealthService() = default;

void HealthService::Listen(CqLoop* loop) {
  loop_ = loop;
  UnaryCall<Health::AsyncService, HealthCheckRequest, HealthCheckResponse>::Listen(
      &async_, &Health::AsyncService::RequestCheck, loop, &check_);
  WatchCall::Listen(this);
}

bool HealthService::Known(const std::string& service) const { return services_.count(service) > 0; }

HealthService::Status HealthService::Current() {
  absl::MutexLock lock(&mu_);
  return status_;
}

void HealthService::SetServing(bool serving) {
  Set(serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING, false, false);
}

void HealthService::StopServing() { Set(HealthCheckResponse::NOT_SERVING, true, false); }

void HealthService::Shutdown() { Set(HealthCheckResponse::NOT_SERVING, true, true); }

void HealthService::Set(Status status, bool final, bool end_watches) {
  absl::MutexLock lock(&mu_);
  if (end_watches_ || (shut_down_ && !end_watches) || (status == status_ && !final)) return;
  status_ = status;
  shut_down_ = shut_down_ || final;
  end_watches_ = end_watches;
  // Before Listen nobody watches; after, the loop tells the watchers.
  if (loop_ == nullptr || alarm_set_) return;
  alarm_set_ = true;
  alarm_.Set(loop_->cq(), gpr_now(GPR_CLOCK_MONOTONIC), &changed_ev_);
}

void HealthService::OnChanged(bool) {
  Status status;
  bool final = false;
  {
    absl::MutexLock lock(&mu_);
    alarm_set_ = false;
    status = status_;
    final = end_watches_;
  }
  for (WatchCall* w : std::vector<WatchCall*>(watchers_.begin(), watchers_.end())) {
    if (w->known_) w->Update(status);
    if (final) w->End();
  }
}

}  // namespace switchboard::control
