#pragma once

#include <set>
#include <string>

#include <grpcpp/alarm.h>

#include "absl/synchronization/mutex.h"
#include "control/cq_server.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace switchboard::control {

// grpc.health.v1 (Check and Watch) on the CqLoop, for "" (the server) and
// each of control's services by name; all share one status. gRPC's own
// default health service is a callback service, and any callback service
// starts gRPC's polling threads beside the loop (see cq_server.h).
// SetServing and Shutdown may be called from any thread, before the loop
// stops; Listen once, after the server is built.
class HealthService {
 public:
  HealthService();
  ~HealthService();
  grpc::Service* grpc_service() { return &async_; }
  void Listen(CqLoop* loop);
  // SERVING or NOT_SERVING; a change reaches every Watch.
  void SetServing(bool serving);
  // NOT_SERVING from now on, whatever SetServing says later; the watchers
  // hear it and their streams stay open.
  void StopServing();
  // As StopServing, and every Watch stream ends (UNAVAILABLE) once its last
  // status is out.
  void Shutdown();

 private:
  using Status = grpc::health::v1::HealthCheckResponse::ServingStatus;
  class WatchCall;
  friend class WatchCall;

  bool Known(const std::string& service) const;
  Status Current();
  void Set(Status status, bool final, bool end_watches);
  // On the loop: the status changed; every watcher hears it.
  void OnChanged(bool ok);

  grpc::health::v1::Health::AsyncService async_;
  UnaryCall<grpc::health::v1::Health::AsyncService, grpc::health::v1::HealthCheckRequest,
            grpc::health::v1::HealthCheckResponse>::Handler check_;
  CqLoop* loop_ = nullptr;
  std::set<std::string> services_;

  absl::Mutex mu_;
  Status status_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  bool end_watches_ ABSL_GUARDED_BY(mu_) = false;
  bool alarm_set_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Alarm alarm_;
  MemberEvent<HealthService, &HealthService::OnChanged> changed_ev_{this};

  std::set<WatchCall*> watchers_;  // loop thread only
};

}  // namespace switchboard::control
