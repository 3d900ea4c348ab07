#pragma once

#include <atomic>
#include <string>

#include "control/fleet.h"
#include "control/scatter_gather.h"
#include "switchboard/v1/config.pb.h"
#include "switchboard/v1/control.grpc.pb.h"
#include "switchboard/v1/registry.grpc.pb.h"

namespace switchboard::control {

// The public API: a thin translator from gRPC to the plain classes. Each call
// checks auth and arguments, starts a scatter-gather and returns at once; the
// reactor finishes from a bus or timer thread.
class ControlService final : public v1::Control::CallbackService {
 public:
  ControlService(const v1::Config& config, Fleet* fleet, ScatterGather* gather)
      : config_(config), fleet_(fleet), gather_(gather) {}

  grpc::ServerUnaryReactor* UserConnections(grpc::CallbackServerContext* ctx,
                                            const v1::UserConnectionsRequest* req,
                                            v1::UserConnectionsResponse* resp) override;
  grpc::ServerUnaryReactor* TerminateUser(grpc::CallbackServerContext* ctx,
                                          const v1::TerminateUserRequest* req,
                                          v1::TerminateUserResponse* resp) override;
  grpc::ServerUnaryReactor* Disconnect(grpc::CallbackServerContext* ctx, const v1::DisconnectRequest* req,
                                       v1::DisconnectResponse* resp) override;
  grpc::ServerUnaryReactor* ListGateways(grpc::CallbackServerContext* ctx,
                                         const v1::ListGatewaysRequest* req,
                                         v1::ListGatewaysResponse* resp) override;
  grpc::ServerUnaryReactor* CentrifugoUserConnections(grpc::CallbackServerContext* ctx,
                                                      const v1::CentrifugoUserConnectionsRequest* req,
                                                      v1::UserConnectionsResponse* resp) override;
  grpc::ServerUnaryReactor* CentrifugoDisconnect(grpc::CallbackServerContext* ctx,
                                                 const v1::CentrifugoDisconnectRequest* req,
                                                 v1::CentrifugoDisconnectResponse* resp) override;
  grpc::ServerUnaryReactor* CentrifugoInfo(grpc::CallbackServerContext* ctx, const v1::CentrifugoInfoRequest* req,
                                           v1::CentrifugoInfoResponse* resp) override;

 private:
  // The HTTP form of a call, for Pusher-signed requests through the proxy.
  struct HttpTarget {
    std::string app_id;
    std::string method;
    std::string path;
  };
  // An API key (authorization / x-api-key), or, where `target` is given, a
  // Pusher signature over the HTTP request the proxy forwarded.
  absl::Status Authenticate(grpc::CallbackServerContext* ctx, const HttpTarget* target = nullptr) const;
  grpc::ServerUnaryReactor* GatherUserConnections(grpc::ServerUnaryReactor* reactor, absl::Time deadline,
                                                  const std::string& app_id, const std::string& user_id,
                                                  v1::UserConnectionsResponse* resp);
  absl::Time GatherDeadline(grpc::CallbackServerContext* ctx) const;

  const v1::Config& config_;
  Fleet* fleet_;
  ScatterGather* gather_;
};

// Gateways attach here; each stream is a reactor that owns its state and
// deletes itself when done. Fleet membership follows the stream.
class RegistryService final : public v1::Registry::CallbackService {
 public:
  RegistryService(Fleet* fleet, std::string control_id, std::string cluster_token)
      : fleet_(fleet), control_id_(std::move(control_id)), cluster_token_(std::move(cluster_token)) {}
  grpc::ServerBidiReactor<v1::GatewayMessage, v1::ControlMessage>* Attach(
      grpc::CallbackServerContext* ctx) override;

 private:
  Fleet* fleet_;
  std::string control_id_;
  std::string cluster_token_;
};

// Metadata a gateway sends on Attach: the cluster credential.
inline constexpr char kClusterTokenKey[] = "x-switchboard-cluster-token";
// Metadata switchboard-http sends on every call: its own credential. Only
// calls that carry it may use the x-switchboard-http-* metadata.
inline constexpr char kHttpProxyTokenKey[] = "x-switchboard-proxy-token";

}  // namespace switchboard::control
