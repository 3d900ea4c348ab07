#include "control/services.h"

#include <chrono>

#include "common/crypto.h"
#include "common/grpc_status.h"
#include "control/api_logic.h"
#include "control/pusher_auth.h"
#include "google/protobuf/util/time_util.h"
#include "spdlog/spdlog.h"

namespace switchboard::control {
namespace {

std::string Metadata(grpc::CallbackServerContext* ctx, const std::string& key) {
  const auto& md = ctx->client_metadata();
  auto it = md.find(key);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

// Answers a partial result a little before the caller's deadline, so the
// caller gets `complete=false` instead of DEADLINE_EXCEEDED.
absl::Duration Margin(absl::Duration remaining) {
  return std::min(absl::Milliseconds(200), remaining / 5);
}

// The reaction to a finished scatter-gather: the error as it is, or `fill`
// the response and OK. Runs on a bus or timer thread; never blocks.
template <typename Fill>
ScatterGather::Done FinishWith(grpc::ServerUnaryReactor* reactor, Fill fill) {
  return [reactor, fill](absl::StatusOr<GatherResult> r) {
    if (!r.ok()) {
      reactor->Finish(ToGrpcStatus(r.status()));
      return;
    }
    fill(*r);
    reactor->Finish(grpc::Status::OK);
  };
}

// The bus form of a terminate; `only_client_id` narrows it to one connection.
v1::BusRequest TerminateRequest(const v1::TerminateUserRequest& req, const std::string& only_client_id = "") {
  v1::BusRequest bus_req;
  auto* t = bus_req.mutable_terminate();
  t->set_app_id(req.app_id());
  t->set_user_id(req.user_id());
  *t->mutable_except_client_ids() = req.except_client_ids();
  t->set_only_client_id(only_client_id);
  t->set_code(req.code());
  t->set_reason(req.reason());
  return bus_req;
}

}  // namespace

absl::Status ControlService::Authenticate(grpc::CallbackServerContext* ctx, const HttpTarget* target) const {
  // What switchboard-http forwards about the HTTP request counts only when
  // switchboard-http sent it: anyone else could replay a captured signed
  // request over gRPC with another body.
  const auto& md = ctx->client_metadata();
  const bool has_http_md = md.count(kHttpMethodKey) || md.count(kHttpPathKey) || md.count(kHttpQueryKey) ||
                           md.count(kHttpBodyMd5Key);
  const bool from_proxy = ConstantTimeEquals(Metadata(ctx, kHttpProxyTokenKey), config_.http_proxy_token());
  if (has_http_md && !from_proxy) {
    return absl::UnauthenticatedError("x-switchboard-http-* metadata is accepted only from switchboard-http");
  }
  const std::string authorization = Metadata(ctx, "authorization");
  const std::string api_key = Metadata(ctx, "x-api-key");
  if (!authorization.empty() || !api_key.empty() || target == nullptr || !has_http_md) {
    return CheckApiKey(config_, authorization, api_key);
  }
  HttpRequestInfo http{Metadata(ctx, kHttpMethodKey), Metadata(ctx, kHttpPathKey), Metadata(ctx, kHttpQueryKey),
                       Metadata(ctx, kHttpBodyMd5Key)};
  const std::string q = "&" + http.raw_query;
  if (q.find("&auth_") == std::string::npos && q.find("&body_md5") == std::string::npos) {
    return absl::UnauthenticatedError("missing credentials: an API key or a Pusher-style signature");
  }
  return VerifyPusherSignature(config_, target->app_id, target->method, target->path, http, absl::Now());
}

absl::Time ControlService::GatherDeadline(grpc::CallbackServerContext* ctx) const {
  absl::Time now = absl::Now();
  absl::Time fallback = now + absl::Milliseconds(config_.control().default_timeout_ms());
  auto deadline = ctx->deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) return fallback;
  // However long the caller is willing to wait, a fleet call is bounded.
  absl::Time caller = std::min(absl::FromChrono(deadline), now + absl::Milliseconds(config_.control().max_timeout_ms()));
  absl::Duration remaining = caller - now;
  if (remaining <= absl::ZeroDuration()) return now;
  return caller - Margin(remaining);
}

grpc::ServerUnaryReactor* ControlService::UserConnections(grpc::CallbackServerContext* ctx,
                                                          const v1::UserConnectionsRequest* req,
                                                          v1::UserConnectionsResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  HttpTarget target{req->app_id(), "GET", "/apps/" + req->app_id() + "/users/" + req->user_id() + "/connections"};
  absl::Status st = Authenticate(ctx, &target);
  if (st.ok()) st = ValidateUserConnections(config_, *req);
  if (!st.ok()) {
    reactor->Finish(ToGrpcStatus(st));
    return reactor;
  }
  return GatherUserConnections(reactor, GatherDeadline(ctx), req->app_id(), req->user_id(), resp);
}

grpc::ServerUnaryReactor* ControlService::GatherUserConnections(grpc::ServerUnaryReactor* reactor,
                                                                absl::Time deadline, const std::string& app_id,
                                                                const std::string& user_id,
                                                                v1::UserConnectionsResponse* resp) {
  v1::BusRequest bus_req;
  bus_req.mutable_user_query()->set_app_id(app_id);
  bus_req.mutable_user_query()->set_user_id(user_id);
  gather_->Call(std::move(bus_req), deadline,
                FinishWith(reactor, [resp](const GatherResult& g) {
                  FillUserConnections(g, resp);
                }));
  return reactor;
}

grpc::ServerUnaryReactor* ControlService::CentrifugoUserConnections(
    grpc::CallbackServerContext* ctx, const v1::CentrifugoUserConnectionsRequest* req,
    v1::UserConnectionsResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  v1::UserConnectionsRequest plain;
  plain.set_app_id(config_.default_app());
  plain.set_user_id(req->user());
  absl::Status st = Authenticate(ctx);
  if (st.ok()) st = ValidateUserConnections(config_, plain);
  if (!st.ok()) {
    reactor->Finish(ToGrpcStatus(st));
    return reactor;
  }
  return GatherUserConnections(reactor, GatherDeadline(ctx), plain.app_id(), plain.user_id(), resp);
}

grpc::ServerUnaryReactor* ControlService::CentrifugoDisconnect(grpc::CallbackServerContext* ctx,
                                                               const v1::CentrifugoDisconnectRequest* req,
                                                               v1::CentrifugoDisconnectResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  v1::TerminateUserRequest plain;
  plain.set_app_id(config_.default_app());
  plain.set_user_id(req->user());
  *plain.mutable_except_client_ids() = req->whitelist();
  plain.set_code(req->disconnect().code());
  plain.set_reason(req->disconnect().reason());
  absl::Status st = Authenticate(ctx);
  if (st.ok()) st = ValidateTerminateUser(config_, plain);
  if (st.ok() && req->client().size() > 256) st = absl::InvalidArgumentError("client is longer than 256 bytes");
  if (!st.ok()) {
    reactor->Finish(ToGrpcStatus(st));
    return reactor;
  }
  gather_->Call(TerminateRequest(plain, req->client()), GatherDeadline(ctx),
                FinishWith(reactor, [resp](const GatherResult& g) {
                  v1::TerminateUserResponse full;
                  FillTerminateUser(g, &full);
                  resp->mutable_result()->set_closed(full.closed());
                  *resp->mutable_result()->mutable_coverage() = full.coverage();
                }));
  return reactor;
}

grpc::ServerUnaryReactor* ControlService::TerminateUser(grpc::CallbackServerContext* ctx,
                                                        const v1::TerminateUserRequest* req,
                                                        v1::TerminateUserResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  HttpTarget target{req->app_id(), "POST",
                    "/apps/" + req->app_id() + "/users/" + req->user_id() + "/terminate_connections"};
  absl::Status st = Authenticate(ctx, &target);
  if (st.ok()) st = ValidateTerminateUser(config_, *req);
  if (!st.ok()) {
    reactor->Finish(ToGrpcStatus(st));
    return reactor;
  }
  gather_->Call(TerminateRequest(*req), GatherDeadline(ctx),
                FinishWith(reactor, [resp](const GatherResult& g) {
                  FillTerminateUser(g, resp);
                }));
  return reactor;
}

grpc::ServerUnaryReactor* ControlService::Disconnect(grpc::CallbackServerContext* ctx,
                                                     const v1::DisconnectRequest* req,
                                                     v1::DisconnectResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  HttpTarget target{req->app_id(), "POST",
                    "/apps/" + req->app_id() + "/connections/" + req->client_id() + "/disconnect"};
  absl::Status st = Authenticate(ctx, &target);
  if (st.ok()) st = ValidateDisconnect(config_, *req);
  if (!st.ok()) {
    reactor->Finish(ToGrpcStatus(st));
    return reactor;
  }
  v1::BusRequest bus_req;
  auto* d = bus_req.mutable_disconnect();
  d->set_app_id(req->app_id());
  d->set_client_id(req->client_id());
  d->set_code(req->code());
  d->set_reason(req->reason());
  gather_->Call(std::move(bus_req), GatherDeadline(ctx),
                FinishWith(reactor, [resp](const GatherResult& g) {
                  FillDisconnect(g, resp);
                }));
  return reactor;
}

grpc::ServerUnaryReactor* ControlService::ListGateways(grpc::CallbackServerContext* ctx,
                                                       const v1::ListGatewaysRequest*,
                                                       v1::ListGatewaysResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  absl::Status st = Authenticate(ctx);
  if (!st.ok()) {
    reactor->Finish(ToGrpcStatus(st));
    return reactor;
  }
  for (auto& g : fleet_->List(absl::Now())) *resp->add_gateways() = std::move(g);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ControlService::CentrifugoInfo(grpc::CallbackServerContext* ctx,
                                                         const v1::CentrifugoInfoRequest*,
                                                         v1::CentrifugoInfoResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  absl::Status st = Authenticate(ctx);
  if (!st.ok()) {
    reactor->Finish(ToGrpcStatus(st));
    return reactor;
  }
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  for (const auto& g : fleet_->List(absl::Now())) {
    auto* node = resp->mutable_result()->add_nodes();
    node->set_uid(g.id());
    node->set_name(g.id());
    node->set_version(g.version());
    node->set_num_clients(g.sessions());
    const int64_t started_ms = google::protobuf::util::TimeUtil::TimestampToMilliseconds(g.started_at());
    node->set_uptime(static_cast<uint64_t>(std::max<int64_t>(0, now_ms - started_ms) / 1000));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

namespace {

// Ends an Attach stream exactly once, whoever asks first: the stream itself
// (the gateway hung up) or the fleet (lease expired). Shared with the fleet's
// evict callback, so that callback never touches a reactor that is gone: the
// reactor is deleted only in OnDone, which needs Finish, which only the
// winner of TryFinish calls.
class FinishOnce {
 public:
  explicit FinishOnce(grpc::ServerBidiReactor<v1::GatewayMessage, v1::ControlMessage>* reactor)
      : reactor_(reactor) {}
  bool TryFinish(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return false;
      finished_ = true;
    }
    reactor_->Finish(status);
    return true;
  }

 private:
  grpc::ServerBidiReactor<v1::GatewayMessage, v1::ControlMessage>* const reactor_;
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

class AttachReactor final : public grpc::ServerBidiReactor<v1::GatewayMessage, v1::ControlMessage> {
 public:
  AttachReactor(grpc::CallbackServerContext* ctx, Fleet* fleet, const std::string& control_id,
                const std::string& cluster_token)
      : fleet_(fleet), finish_(std::make_shared<FinishOnce>(this)) {
    welcome_.mutable_welcome()->set_control_id(control_id);
    // Only the cluster's gateways may join the fleet.
    if (!ConstantTimeEquals(Metadata(ctx, kClusterTokenKey), cluster_token)) {
      spdlog::warn("attach refused: missing or wrong cluster token (peer {})", ctx->peer());
      finish_->TryFinish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or wrong cluster token"));
      return;
    }
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      finish_->TryFinish(grpc::Status::OK);
      return;
    }
    if (gateway_id_.empty() && !in_.has_hello()) {
      finish_->TryFinish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello must come first"));
      return;
    }
    const absl::Time now = absl::Now();
    switch (in_.kind_case()) {
      case v1::GatewayMessage::kHello: {
        if (!gateway_id_.empty() || in_.hello().gateway_id().empty() || in_.hello().gateway_id().size() > 256) {
          finish_->TryFinish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "one hello with a gateway_id first"));
          return;
        }
        std::weak_ptr<FinishOnce> finish = finish_;
        token_ = fleet_->Attach(in_.hello(), now, [finish] {
          if (auto f = finish.lock()) f->TryFinish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "lease expired"));
        });
        if (token_ == 0) {
          // Never a replacement: the member keeps its place until its lease runs out.
          spdlog::warn("attach refused: gateway {} is already attached", in_.hello().gateway_id());
          finish_->TryFinish(grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                                          "a gateway with this ID is attached and its lease is fresh"));
          return;
        }
        gateway_id_ = in_.hello().gateway_id();
        spdlog::info("gateway {} attached ({})", gateway_id_, in_.hello().address());
        StartWrite(&welcome_);
        break;
      }
      case v1::GatewayMessage::kSnapshot:
        fleet_->ApplySnapshot(gateway_id_, token_, in_.snapshot());
        break;
      case v1::GatewayMessage::kDelta:
        fleet_->ApplyDelta(gateway_id_, token_, in_.delta());
        break;
      case v1::GatewayMessage::kLoad:
        fleet_->ApplyLoad(gateway_id_, token_, in_.load());
        break;
      default:
        break;
    }
    fleet_->Renew(gateway_id_, token_, now);
    StartRead(&in_);
  }

  void OnWriteDone(bool) override {}

  void OnDone() override {
    if (token_) {
      fleet_->Detach(gateway_id_, token_);
      spdlog::info("gateway {} detached", gateway_id_);
    }
    delete this;
  }

 private:
  Fleet* fleet_;
  std::shared_ptr<FinishOnce> finish_;
  v1::GatewayMessage in_;
  v1::ControlMessage welcome_;
  std::string gateway_id_;
  uint64_t token_ = 0;
};

}  // namespace

grpc::ServerBidiReactor<v1::GatewayMessage, v1::ControlMessage>* RegistryService::Attach(
    grpc::CallbackServerContext* ctx) {
  return new AttachReactor(ctx, fleet_, control_id_, cluster_token_);
}

}  // namespace switchboard::control
