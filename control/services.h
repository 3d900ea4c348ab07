#pragma once

#include <atomic>
#include <string>

#include "control/call_metrics.h"
#include "nlohmann/json.hpp"
#include "control/cq_server.h"
#include "control/fleet.h"
#include "control/scatter_gather.h"
#include "switchboard/v1/config.pb.h"
#include "switchboard/v1/control.grpc.pb.h"
#include "switchboard/v1/registry.grpc.pb.h"

namespace switchboard::control {

// The public API: a thin translator from gRPC to the plain classes. Each call
// checks auth and arguments, starts a scatter-gather and returns at once; the
// answer is finished from a bus or timer thread. Handlers run on the
// CqLoop's thread.
class ControlService {
 public:
  ControlService(const v1::Config& config, Fleet* fleet, ScatterGather* gather);

  // For ServerBuilder::RegisterService.
  grpc::Service* grpc_service() { return &async_; }
  // After the server is built: every method waits for calls on the loop.
  void Listen(CqLoop* loop);
  // Every call counted and timed from now on (before Listen).
  void set_metrics(CallMetrics* metrics) { metrics_ = metrics; }

  void UserConnections(grpc::ServerContext* ctx, const v1::UserConnectionsRequest* req,
                       v1::UserConnectionsResponse* resp, UnaryResponder* done);
  void TerminateUser(grpc::ServerContext* ctx, const v1::TerminateUserRequest* req, v1::TerminateUserResponse* resp,
                     UnaryResponder* done);
  void Disconnect(grpc::ServerContext* ctx, const v1::DisconnectRequest* req, v1::DisconnectResponse* resp,
                  UnaryResponder* done);
  void SendToUser(grpc::ServerContext* ctx, const v1::SendToUserRequest* req, v1::SendToUserResponse* resp,
                  UnaryResponder* done);
  void SendToClient(grpc::ServerContext* ctx, const v1::SendToClientRequest* req, v1::SendToClientResponse* resp,
                    UnaryResponder* done);
  void ListGateways(grpc::ServerContext* ctx, const v1::ListGatewaysRequest* req, v1::ListGatewaysResponse* resp,
                    UnaryResponder* done);
  void CentrifugoUserConnections(grpc::ServerContext* ctx, const v1::CentrifugoUserConnectionsRequest* req,
                                 v1::UserConnectionsResponse* resp, UnaryResponder* done);
  void CentrifugoDisconnect(grpc::ServerContext* ctx, const v1::CentrifugoDisconnectRequest* req,
                            v1::CentrifugoDisconnectResponse* resp, UnaryResponder* done);
  void CentrifugoInfo(grpc::ServerContext* ctx, const v1::CentrifugoInfoRequest* req,
                      v1::CentrifugoInfoResponse* resp, UnaryResponder* done);
  void CentrifugoPublish(grpc::ServerContext* ctx, const v1::CentrifugoPublishRequest* req,
                         v1::CentrifugoPublishResponse* resp, UnaryResponder* done);
  void CentrifugoBroadcast(grpc::ServerContext* ctx, const v1::CentrifugoBroadcastRequest* req,
                           v1::CentrifugoBroadcastResponse* resp, UnaryResponder* done);
  void PusherTrigger(grpc::ServerContext* ctx, const v1::PusherTriggerRequest* req, v1::PusherTriggerResponse* resp,
                     UnaryResponder* done);
  void PusherTriggerBatch(grpc::ServerContext* ctx, const v1::PusherTriggerBatchRequest* req,
                          v1::PusherTriggerBatchResponse* resp, UnaryResponder* done);

 private:
  // The HTTP form of a call, for Pusher-signed requests through the proxy.
  struct HttpTarget {
    std::string app_id;
    std::string method;
    std::string path;
  };
  // An API key (authorization / x-api-key), or, where `target` is given, a
  // Pusher signature over the HTTP request the proxy forwarded.
  // `principal`, when given: who the credentials name (an API key's name,
  // or "pusher-signature" for a signed request through switchboard-http).
  absl::Status Authenticate(grpc::ServerContext* ctx, const HttpTarget* target = nullptr,
                            std::string* principal = nullptr) const;
  // The start of a command's audit record (issue "See the fleet"): its
  // request ID (also sent back as x-request-id), who, from where, through
  // what. The outcome is added when the command finishes (Audited).
  nlohmann::ordered_json AuditStart(grpc::ServerContext* ctx, const char* action, const std::string& principal,
                                    std::string* request_id) const;
  void GatherUserConnections(UnaryResponder* done, absl::Time deadline, const std::string& app_id,
                             const std::string& user_id, v1::UserConnectionsResponse* resp, uint32_t page_size = 0,
                             std::string after = "");
  absl::Time GatherDeadline(grpc::ServerContext* ctx) const;
  // Several bus requests gathered at once (one per user of a multi-channel
  // publish); `done` gets every result in order, once the last is in, or
  // the first error. Any thread.
  using AllDone = std::function<void(absl::StatusOr<std::vector<GatherResult>>)>;
  void GatherAll(std::vector<v1::BusRequest> requests, absl::Time deadline, AllDone done);
  // The shape of the Pusher and Centrifugo sending calls: the caller
  // authenticated (st), the bus requests built (or their error), gathered
  // together, the answer filled by `fill` from every result in order.
  using FillAll = std::function<void(const std::vector<GatherResult>&)>;
  void SendAll(grpc::ServerContext* ctx, const absl::Status& st,
               const std::function<absl::StatusOr<std::vector<v1::BusRequest>>()>& build, FillAll fill,
               UnaryResponder* done);
  // Binds a method of this class as a handler of its UnaryCall.
  template <typename Req, typename Resp>
  typename UnaryCall<v1::Control::AsyncService, Req, Resp>::Handler Bind(
      void (ControlService::*method)(grpc::ServerContext*, const Req*, Resp*, UnaryResponder*), const char* name) {
    return [this, method, name](grpc::ServerContext* ctx, const Req* req, Resp* resp, UnaryResponder* done) {
      if (metrics_ != nullptr) done = metrics_->Wrap(name, done);
      (this->*method)(ctx, req, resp, done);
    };
  }

  const v1::Config& config_;
  Fleet* fleet_;
  ScatterGather* gather_;
  CallMetrics* metrics_ = nullptr;
  v1::Control::AsyncService async_;
  // One per method, shared by its calls.
  UnaryCall<v1::Control::AsyncService, v1::UserConnectionsRequest, v1::UserConnectionsResponse>::Handler
      user_connections_;
  UnaryCall<v1::Control::AsyncService, v1::TerminateUserRequest, v1::TerminateUserResponse>::Handler terminate_user_;
  UnaryCall<v1::Control::AsyncService, v1::DisconnectRequest, v1::DisconnectResponse>::Handler disconnect_;
  UnaryCall<v1::Control::AsyncService, v1::SendToUserRequest, v1::SendToUserResponse>::Handler send_to_user_;
  UnaryCall<v1::Control::AsyncService, v1::SendToClientRequest, v1::SendToClientResponse>::Handler send_to_client_;
  UnaryCall<v1::Control::AsyncService, v1::ListGatewaysRequest, v1::ListGatewaysResponse>::Handler list_gateways_;
  UnaryCall<v1::Control::AsyncService, v1::CentrifugoUserConnectionsRequest, v1::UserConnectionsResponse>::Handler
      centrifugo_user_connections_;
  UnaryCall<v1::Control::AsyncService, v1::CentrifugoDisconnectRequest, v1::CentrifugoDisconnectResponse>::Handler
      centrifugo_disconnect_;
  UnaryCall<v1::Control::AsyncService, v1::CentrifugoInfoRequest, v1::CentrifugoInfoResponse>::Handler
      centrifugo_info_;
  UnaryCall<v1::Control::AsyncService, v1::CentrifugoPublishRequest, v1::CentrifugoPublishResponse>::Handler
      centrifugo_publish_;
  UnaryCall<v1::Control::AsyncService, v1::CentrifugoBroadcastRequest, v1::CentrifugoBroadcastResponse>::Handler
      centrifugo_broadcast_;
  UnaryCall<v1::Control::AsyncService, v1::PusherTriggerRequest, v1::PusherTriggerResponse>::Handler pusher_trigger_;
  UnaryCall<v1::Control::AsyncService, v1::PusherTriggerBatchRequest, v1::PusherTriggerBatchResponse>::Handler
      pusher_trigger_batch_;
};

// Gateways attach here; each stream is an object on the CqLoop that owns its
// state and deletes itself when done. Fleet membership follows the stream.
class RegistryService {
 public:
  // `reply_subject`: where this replica's bus requests want their answers
  // (each gateway's welcome names it with the gateway's answer key).
  RegistryService(Fleet* fleet, std::string control_id, std::string cluster_token, std::string reply_subject = "")
      : fleet_(fleet),
        control_id_(std::move(control_id)),
        cluster_token_(std::move(cluster_token)),
        reply_subject_(std::move(reply_subject)) {}
  grpc::Service* grpc_service() { return &async_; }
  // After the server is built: waits for Attach calls on the loop.
  void Listen(CqLoop* loop);

 private:
  Fleet* fleet_;
  std::string control_id_;
  std::string cluster_token_;
  std::string reply_subject_;
  v1::Registry::AsyncService async_;
};

// Metadata a gateway sends on Attach: the cluster credential.
inline constexpr char kClusterTokenKey[] = "x-switchboard-cluster-token";
// Metadata switchboard-http sends on every call: its own credential. Only
// calls that carry it may use the x-switchboard-http-* metadata.
inline constexpr char kHttpProxyTokenKey[] = "x-switchboard-proxy-token";

}  // namespace switchboard::control
