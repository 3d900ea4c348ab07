#include "control/services.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include <grpcpp/alarm.h>

#include "absl/synchronization/mutex.h"
#include "common/answer_mac.h"
#include "common/crypto.h"
#include "common/grpc_status.h"
#include "common/ids.h"
#include "common/logging.h"
#include "control/api_logic.h"
#include "control/pusher_auth.h"
#include "google/protobuf/util/time_util.h"
#include "spdlog/spdlog.h"

namespace switchboard::control {
namespace {

std::string Metadata(grpc::ServerContext* ctx, const std::string& key) {
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
ScatterGather::Done FinishWith(UnaryResponder* done, Fill fill) {
  return [done, fill](absl::StatusOr<GatherResult> r) {
    if (!r.ok()) {
      done->Finish(ToGrpcStatus(r.status()));
      return;
    }
    fill(*r);
    done->Finish(grpc::Status::OK);
  };
}

// An ID a caller sent (x-request-id), if it is a sane one to log.
std::string CallerRequestId(grpc::ServerContext* ctx) {
  std::string id = Metadata(ctx, "x-request-id");
  if (id.size() > 128 || !std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7f; })) return "";
  return id;
}

// The command's outcome, added to its audit record and logged (once).
nlohmann::ordered_json Outcome(const absl::StatusOr<GatherResult>& r) {
  nlohmann::ordered_json o;
  if (!r.ok()) {
    o["status"] = CallMetrics::CodeName(ToGrpcStatus(r.status()).error_code());
    o["error"] = std::string(r.status().message());
    return o;
  }
  o["status"] = "OK";
  o["complete"] = r->complete;
  uint32_t closed = 0;
  nlohmann::ordered_json per_gateway = nlohmann::ordered_json::object();
  for (const auto& [id, reply] : r->answers) {
    if (!reply.error().empty()) continue;
    per_gateway[id] = reply.closed();
    closed += reply.closed();
  }
  o["closed"] = closed;
  o["closed_per_gateway"] = per_gateway;
  nlohmann::ordered_json missing = nlohmann::ordered_json::object();
  for (const auto& id : r->missing) {
    auto it = r->missing_reasons.find(id);
    missing[id] = it != r->missing_reasons.end() ? it->second : "";
  }
  o["missing"] = missing;
  if (!r->complete) o["incomplete_reason"] = r->incomplete_reason;
  return o;
}

// Wraps a gather's done: logs the audit record with the outcome first.
ScatterGather::Done Audited(nlohmann::ordered_json record, ScatterGather::Done done) {
  return [record = std::move(record), done = std::move(done)](absl::StatusOr<GatherResult> r) mutable {
    record["outcome"] = Outcome(r);
    {
      ScopedLogFields fields(nlohmann::ordered_json{{"request_id", record.value("request_id", "")}});
      LogAudit(record);
    }
    done(std::move(r));
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

absl::Status ControlService::Authenticate(grpc::ServerContext* ctx, const HttpTarget* target,
                                          std::string* principal) const {
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
    return CheckApiKey(config_, authorization, api_key, principal);
  }
  if (principal != nullptr) *principal = "pusher-signature";
  HttpRequestInfo http{Metadata(ctx, kHttpMethodKey), Metadata(ctx, kHttpPathKey), Metadata(ctx, kHttpQueryKey),
                       Metadata(ctx, kHttpBodyMd5Key)};
  const std::string q = "&" + http.raw_query;
  if (q.find("&auth_") == std::string::npos && q.find("&body_md5") == std::string::npos) {
    return absl::UnauthenticatedError("missing credentials: an API key or a Pusher-style signature");
  }
  return VerifyPusherSignature(config_, target->app_id, target->method, target->path, http, absl::Now());
}

nlohmann::ordered_json ControlService::AuditStart(grpc::ServerContext* ctx, const char* action,
                                                  const std::string& principal, std::string* request_id) const {
  *request_id = NewUuid();
  ctx->AddInitialMetadata("x-request-id", *request_id);
  const bool from_proxy = ConstantTimeEquals(Metadata(ctx, kHttpProxyTokenKey), config_.http_proxy_token());
  nlohmann::ordered_json r;
  r["action"] = action;
  r["request_id"] = *request_id;
  if (std::string caller = CallerRequestId(ctx); !caller.empty()) r["caller_request_id"] = caller;
  r["api_key"] = principal;  // the key's name, never the key
  if (from_proxy) {
    r["address"] = Metadata(ctx, kHttpClientKey);
    r["via"] = "http " + Metadata(ctx, kHttpMethodKey) + " " + Metadata(ctx, kHttpPathKey);
  } else {
    r["address"] = ctx->peer();
    r["via"] = std::string("grpc ") + action;
  }
  return r;
}

absl::Time ControlService::GatherDeadline(grpc::ServerContext* ctx) const {
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

void ControlService::UserConnections(grpc::ServerContext* ctx, const v1::UserConnectionsRequest* req,
                                     v1::UserConnectionsResponse* resp, UnaryResponder* done) {
  HttpTarget target{req->app_id(), "GET", "/apps/" + req->app_id() + "/users/" + req->user_id() + "/connections"};
  absl::Status st = Authenticate(ctx, &target);
  if (st.ok()) st = ValidateUserConnections(config_, *req);
  if (!st.ok()) {
    done->Finish(ToGrpcStatus(st));
    return;
  }
  GatherUserConnections(done, GatherDeadline(ctx), req->app_id(), req->user_id(), resp, req->page_size(),
                        *PageCursor(req->page_token()));
}

void ControlService::GatherUserConnections(UnaryResponder* done, absl::Time deadline, const std::string& app_id,
                                           const std::string& user_id, v1::UserConnectionsResponse* resp,
                                           uint32_t page_size, std::string after) {
  v1::BusRequest bus_req;
  bus_req.mutable_user_query()->set_app_id(app_id);
  bus_req.mutable_user_query()->set_user_id(user_id);
  bus_req.mutable_user_query()->set_after_client_id(after);
  // One more than the page: whether there is a next page.
  if (page_size > 0) bus_req.mutable_user_query()->set_limit(page_size + 1);
  gather_->Call(std::move(bus_req), deadline,
                FinishWith(done, [resp, page_size, after = std::move(after)](const GatherResult& g) {
                  FillUserConnections(g, resp, page_size, after);
                }));
}

void ControlService::CentrifugoUserConnections(grpc::ServerContext* ctx,
                                               const v1::CentrifugoUserConnectionsRequest* req,
                                               v1::UserConnectionsResponse* resp, UnaryResponder* done) {
  v1::UserConnectionsRequest plain;
  plain.set_app_id(config_.default_app());
  plain.set_user_id(req->user());
  absl::Status st = Authenticate(ctx);
  if (st.ok()) st = ValidateUserConnections(config_, plain);
  if (!st.ok()) {
    done->Finish(ToGrpcStatus(st));
    return;
  }
  GatherUserConnections(done, GatherDeadline(ctx), plain.app_id(), plain.user_id(), resp);
}

void ControlService::CentrifugoDisconnect(grpc::ServerContext* ctx, const v1::CentrifugoDisconnectRequest* req,
                                          v1::CentrifugoDisconnectResponse* resp, UnaryResponder* done) {
  v1::TerminateUserRequest plain;
  plain.set_app_id(config_.default_app());
  plain.set_user_id(req->user());
  *plain.mutable_except_client_ids() = req->whitelist();
  plain.set_code(req->disconnect().code());
  plain.set_reason(req->disconnect().reason());
  std::string principal, request_id;
  absl::Status st = Authenticate(ctx, nullptr, &principal);
  nlohmann::ordered_json audit = AuditStart(ctx, "CentrifugoDisconnect", principal, &request_id);
  audit["app"] = plain.app_id();
  audit["user"] = plain.user_id();
  audit["client_id"] = req->client();
  audit["except"] = std::vector<std::string>(plain.except_client_ids().begin(), plain.except_client_ids().end());
  audit["code"] = plain.code();
  audit["reason"] = plain.reason();
  if (st.ok()) st = ValidateTerminateUser(config_, plain);
  if (st.ok() && req->client().size() > 256) st = absl::InvalidArgumentError("client is longer than 256 bytes");
  if (!st.ok()) {
    Audited(std::move(audit), [](absl::StatusOr<GatherResult>) {})(st);
    done->Finish(ToGrpcStatus(st));
    return;
  }
  v1::BusRequest bus_req = TerminateRequest(plain, req->client());
  bus_req.set_request_id(request_id);
  gather_->Call(std::move(bus_req), GatherDeadline(ctx),
                Audited(std::move(audit), FinishWith(done, [resp](const GatherResult& g) {
                  v1::TerminateUserResponse full;
                  FillTerminateUser(g, &full);
                  resp->mutable_result()->set_closed(full.closed());
                  *resp->mutable_result()->mutable_coverage() = full.coverage();
                })));
}

void ControlService::TerminateUser(grpc::ServerContext* ctx, const v1::TerminateUserRequest* req,
                                   v1::TerminateUserResponse* resp, UnaryResponder* done) {
  HttpTarget target{req->app_id(), "POST",
                    "/apps/" + req->app_id() + "/users/" + req->user_id() + "/terminate_connections"};
  std::string principal, request_id;
  absl::Status st = Authenticate(ctx, &target, &principal);
  nlohmann::ordered_json audit = AuditStart(ctx, "TerminateUser", principal, &request_id);
  audit["app"] = req->app_id();
  audit["user"] = req->user_id();
  audit["except"] = std::vector<std::string>(req->except_client_ids().begin(), req->except_client_ids().end());
  audit["code"] = req->code();
  audit["reason"] = req->reason();
  if (st.ok()) st = ValidateTerminateUser(config_, *req);
  if (!st.ok()) {
    Audited(std::move(audit), [](absl::StatusOr<GatherResult>) {})(st);
    done->Finish(ToGrpcStatus(st));
    return;
  }
  v1::BusRequest bus_req = TerminateRequest(*req);
  bus_req.set_request_id(request_id);
  gather_->Call(std::move(bus_req), GatherDeadline(ctx),
                Audited(std::move(audit), FinishWith(done, [resp](const GatherResult& g) {
                  FillTerminateUser(g, resp);
                })));
}

void ControlService::Disconnect(grpc::ServerContext* ctx, const v1::DisconnectRequest* req,
                                v1::DisconnectResponse* resp, UnaryResponder* done) {
  HttpTarget target{req->app_id(), "POST",
                    "/apps/" + req->app_id() + "/connections/" + req->client_id() + "/disconnect"};
  std::string principal, request_id;
  absl::Status st = Authenticate(ctx, &target, &principal);
  nlohmann::ordered_json audit = AuditStart(ctx, "Disconnect", principal, &request_id);
  audit["app"] = req->app_id();
  audit["client_id"] = req->client_id();
  audit["code"] = req->code();
  audit["reason"] = req->reason();
  if (st.ok()) st = ValidateDisconnect(config_, *req);
  if (!st.ok()) {
    Audited(std::move(audit), [](absl::StatusOr<GatherResult>) {})(st);
    done->Finish(ToGrpcStatus(st));
    return;
  }
  v1::BusRequest bus_req;
  bus_req.set_request_id(request_id);
  auto* d = bus_req.mutable_disconnect();
  d->set_app_id(req->app_id());
  d->set_client_id(req->client_id());
  d->set_code(req->code());
  d->set_reason(req->reason());
  gather_->Call(std::move(bus_req), GatherDeadline(ctx),
                Audited(std::move(audit), FinishWith(done, [resp](const GatherResult& g) {
                  FillDisconnect(g, resp);
                })));
}

void ControlService::SendToUser(grpc::ServerContext* ctx, const v1::SendToUserRequest* req,
                                v1::SendToUserResponse* resp, UnaryResponder* done) {
  HttpTarget target{req->app_id(), "POST", "/apps/" + req->app_id() + "/users/" + req->user_id() + "/send"};
  absl::Status st = Authenticate(ctx, &target);
  absl::StatusOr<v1::BusRequest> bus_req = st.ok() ? SendToUserRequest(config_, *req) : st;
  if (!bus_req.ok()) {
    done->Finish(ToGrpcStatus(bus_req.status()));
    return;
  }
  gather_->Call(*std::move(bus_req), GatherDeadline(ctx),
                FinishWith(done, [resp](const GatherResult& g) { FillSendToUser(g, resp); }));
}

void ControlService::SendToClient(grpc::ServerContext* ctx, const v1::SendToClientRequest* req,
                                  v1::SendToClientResponse* resp, UnaryResponder* done) {
  HttpTarget target{req->app_id(), "POST", "/apps/" + req->app_id() + "/connections/" + req->client_id() + "/send"};
  absl::Status st = Authenticate(ctx, &target);
  absl::StatusOr<v1::BusRequest> bus_req = st.ok() ? SendToClientRequest(config_, *req) : st;
  if (!bus_req.ok()) {
    done->Finish(ToGrpcStatus(bus_req.status()));
    return;
  }
  gather_->Call(*std::move(bus_req), GatherDeadline(ctx),
                FinishWith(done, [resp](const GatherResult& g) { FillSendToClient(g, resp); }));
}

void ControlService::GatherAll(std::vector<v1::BusRequest> requests, absl::Time deadline, AllDone done) {
  struct State {
    absl::Mutex mu;
    size_t left;
    std::vector<GatherResult> results;
    absl::Status error;
    AllDone done;
  };
  if (requests.empty()) {
    done(std::vector<GatherResult>{});
    return;
  }
  auto state = std::make_shared<State>();
  state->left = requests.size();
  state->results.resize(requests.size());
  state->done = std::move(done);
  for (size_t i = 0; i < requests.size(); ++i) {
    gather_->Call(std::move(requests[i]), deadline, [state, i](absl::StatusOr<GatherResult> r) {
      bool last = false;
      {
        absl::MutexLock lock(&state->mu);
        if (r.ok()) {
          state->results[i] = *std::move(r);
        } else if (state->error.ok()) {
          state->error = r.status();
        }
        last = --state->left == 0;
      }
      if (!last) return;
      if (!state->error.ok()) {
        state->done(state->error);
      } else {
        state->done(std::move(state->results));
      }
    });
  }
}

void ControlService::SendAll(grpc::ServerContext* ctx, const absl::Status& st,
                             const std::function<absl::StatusOr<std::vector<v1::BusRequest>>()>& build,
                             FillAll fill, UnaryResponder* done) {
  auto requests = st.ok() ? build() : absl::StatusOr<std::vector<v1::BusRequest>>(st);
  if (!requests.ok()) {
    done->Finish(ToGrpcStatus(requests.status()));
    return;
  }
  GatherAll(*std::move(requests), GatherDeadline(ctx),
            [fill = std::move(fill), done](absl::StatusOr<std::vector<GatherResult>> all) {
              if (!all.ok()) {
                done->Finish(ToGrpcStatus(all.status()));
                return;
              }
              fill(*all);
              done->Finish(grpc::Status::OK);
            });
}

void ControlService::CentrifugoPublish(grpc::ServerContext* ctx, const v1::CentrifugoPublishRequest* req,
                                       v1::CentrifugoPublishResponse* resp, UnaryResponder* done) {
  SendAll(
      ctx, Authenticate(ctx),
      [&]() -> absl::StatusOr<std::vector<v1::BusRequest>> {
        auto one = CentrifugoPublishRequest(config_, req->channel(), req->data(), req->b64data());
        if (!one.ok()) return one.status();
        return std::vector<v1::BusRequest>{*std::move(one)};
      },
      [resp](const std::vector<GatherResult>& all) {
        resp->mutable_result()->set_delivered(Delivered(all.front()));
        MergeCoverage(all, resp->mutable_result()->mutable_coverage());
      },
      done);
}

void ControlService::CentrifugoBroadcast(grpc::ServerContext* ctx, const v1::CentrifugoBroadcastRequest* req,
                                         v1::CentrifugoBroadcastResponse* resp, UnaryResponder* done) {
  // Each channel answered in its place: published (delivered, coverage) or
  // its own error, as Centrifugo answers a broadcast.
  auto plan = std::make_shared<std::vector<CentrifugoChannelRequest>>();
  SendAll(
      ctx, Authenticate(ctx),
      [&]() -> absl::StatusOr<std::vector<v1::BusRequest>> {
        auto channels = CentrifugoBroadcastRequests(
            config_, std::vector<std::string>(req->channels().begin(), req->channels().end()), req->data(),
            req->b64data());
        if (!channels.ok()) return channels.status();
        *plan = *std::move(channels);
        std::vector<v1::BusRequest> sends;
        for (auto& ch : *plan) {
          if (ch.request.has_value()) sends.push_back(*std::move(ch.request));
        }
        return sends;
      },
      [resp, plan](const std::vector<GatherResult>& all) {
        size_t next = 0;
        for (const auto& ch : *plan) {
          auto* one = resp->mutable_result()->add_responses();
          if (ch.error.code() != 0) {
            *one->mutable_error() = ch.error;
            continue;
          }
          const GatherResult& g = all.at(next++);
          one->mutable_result()->set_delivered(Delivered(g));
          MergeCoverage({g}, one->mutable_result()->mutable_coverage());
        }
      },
      done);
}

void ControlService::PusherTrigger(grpc::ServerContext* ctx, const v1::PusherTriggerRequest* req,
                                   v1::PusherTriggerResponse* resp, UnaryResponder* done) {
  HttpTarget target{req->app_id(), "POST", "/apps/" + req->app_id() + "/events"};
  SendAll(
      ctx, Authenticate(ctx, &target), [&] { return PusherTriggerRequests(config_, *req); },
      [resp](const std::vector<GatherResult>& all) {
        uint32_t delivered = 0;
        for (const auto& g : all) delivered += Delivered(g);
        resp->set_delivered(delivered);
        MergeCoverage(all, resp->mutable_coverage());
      },
      done);
}

void ControlService::PusherTriggerBatch(grpc::ServerContext* ctx, const v1::PusherTriggerBatchRequest* req,
                                        v1::PusherTriggerBatchResponse* resp, UnaryResponder* done) {
  HttpTarget target{req->app_id(), "POST", "/apps/" + req->app_id() + "/batch_events"};
  SendAll(
      ctx, Authenticate(ctx, &target), [&] { return PusherBatchRequests(config_, *req); },
      [resp](const std::vector<GatherResult>& all) {
        for (const auto& g : all) {
          auto* one = resp->add_batch();
          one->set_delivered(Delivered(g));
          MergeCoverage({g}, one->mutable_coverage());
        }
      },
      done);
}

void ControlService::ListGateways(grpc::ServerContext* ctx, const v1::ListGatewaysRequest*,
                                  v1::ListGatewaysResponse* resp, UnaryResponder* done) {
  absl::Status st = Authenticate(ctx);
  if (!st.ok()) {
    done->Finish(ToGrpcStatus(st));
    return;
  }
  for (auto& g : fleet_->List(absl::Now())) *resp->add_gateways() = std::move(g);
  done->Finish(grpc::Status::OK);
}

void ControlService::CentrifugoInfo(grpc::ServerContext* ctx, const v1::CentrifugoInfoRequest*,
                                    v1::CentrifugoInfoResponse* resp, UnaryResponder* done) {
  absl::Status st = Authenticate(ctx);
  if (!st.ok()) {
    done->Finish(ToGrpcStatus(st));
    return;
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
  done->Finish(grpc::Status::OK);
}

ControlService::ControlService(const v1::Config& config, Fleet* fleet, ScatterGather* gather)
    : config_(config),
      fleet_(fleet),
      gather_(gather),
      user_connections_(Bind(&ControlService::UserConnections, "UserConnections")),
      terminate_user_(Bind(&ControlService::TerminateUser, "TerminateUser")),
      disconnect_(Bind(&ControlService::Disconnect, "Disconnect")),
      send_to_user_(Bind(&ControlService::SendToUser, "SendToUser")),
      send_to_client_(Bind(&ControlService::SendToClient, "SendToClient")),
      list_gateways_(Bind(&ControlService::ListGateways, "ListGateways")),
      centrifugo_user_connections_(Bind(&ControlService::CentrifugoUserConnections, "CentrifugoUserConnections")),
      centrifugo_disconnect_(Bind(&ControlService::CentrifugoDisconnect, "CentrifugoDisconnect")),
      centrifugo_info_(Bind(&ControlService::CentrifugoInfo, "CentrifugoInfo")),
      centrifugo_publish_(Bind(&ControlService::CentrifugoPublish, "CentrifugoPublish")),
      centrifugo_broadcast_(Bind(&ControlService::CentrifugoBroadcast, "CentrifugoBroadcast")),
      pusher_trigger_(Bind(&ControlService::PusherTrigger, "PusherTrigger")),
      pusher_trigger_batch_(Bind(&ControlService::PusherTriggerBatch, "PusherTriggerBatch")) {}

void ControlService::Listen(CqLoop* loop) {
  using S = v1::Control::AsyncService;
  UnaryCall<S, v1::UserConnectionsRequest, v1::UserConnectionsResponse>::Listen(
      &async_, &S::RequestUserConnections, loop, &user_connections_);
  UnaryCall<S, v1::TerminateUserRequest, v1::TerminateUserResponse>::Listen(&async_, &S::RequestTerminateUser, loop,
                                                                            &terminate_user_);
  UnaryCall<S, v1::DisconnectRequest, v1::DisconnectResponse>::Listen(&async_, &S::RequestDisconnect, loop,
                                                                      &disconnect_);
  UnaryCall<S, v1::SendToUserRequest, v1::SendToUserResponse>::Listen(&async_, &S::RequestSendToUser, loop,
                                                                      &send_to_user_);
  UnaryCall<S, v1::SendToClientRequest, v1::SendToClientResponse>::Listen(&async_, &S::RequestSendToClient, loop,
                                                                          &send_to_client_);
  UnaryCall<S, v1::ListGatewaysRequest, v1::ListGatewaysResponse>::Listen(&async_, &S::RequestListGateways, loop,
                                                                          &list_gateways_);
  UnaryCall<S, v1::CentrifugoUserConnectionsRequest, v1::UserConnectionsResponse>::Listen(
      &async_, &S::RequestCentrifugoUserConnections, loop, &centrifugo_user_connections_);
  UnaryCall<S, v1::CentrifugoDisconnectRequest, v1::CentrifugoDisconnectResponse>::Listen(
      &async_, &S::RequestCentrifugoDisconnect, loop, &centrifugo_disconnect_);
  UnaryCall<S, v1::CentrifugoInfoRequest, v1::CentrifugoInfoResponse>::Listen(&async_, &S::RequestCentrifugoInfo,
                                                                              loop, &centrifugo_info_);
  UnaryCall<S, v1::CentrifugoPublishRequest, v1::CentrifugoPublishResponse>::Listen(
      &async_, &S::RequestCentrifugoPublish, loop, &centrifugo_publish_);
  UnaryCall<S, v1::CentrifugoBroadcastRequest, v1::CentrifugoBroadcastResponse>::Listen(
      &async_, &S::RequestCentrifugoBroadcast, loop, &centrifugo_broadcast_);
  UnaryCall<S, v1::PusherTriggerRequest, v1::PusherTriggerResponse>::Listen(&async_, &S::RequestPusherTrigger, loop,
                                                                            &pusher_trigger_);
  UnaryCall<S, v1::PusherTriggerBatchRequest, v1::PusherTriggerBatchResponse>::Listen(
      &async_, &S::RequestPusherTriggerBatch, loop, &pusher_trigger_batch_);
}

namespace {

// One Attach stream. All of it runs on the CqLoop's thread except the
// fleet's evict callback (the sweeper), which only asks, through the door,
// for the stream to end: an alarm brings that request onto the loop. The
// object deletes itself once every operation it handed to gRPC is back.
class AttachCall final {
 public:
  static void Listen(v1::Registry::AsyncService* service, CqLoop* loop, Fleet* fleet, const std::string* control_id,
                     const std::string* cluster_token, const std::string* reply_subject) {
    auto* call = new AttachCall(service, loop, fleet, control_id, cluster_token, reply_subject);
    // Returned when the call ends, however it ends (only if it ever starts).
    call->ctx_.AsyncNotifyWhenDone(&call->done_ev_);
    service->RequestAttach(&call->ctx_, &call->stream_, loop->cq(), loop->cq(), &call->requested_ev_);
  }

 private:
  // What the evict callback holds: it may outlive the call.
  struct Door {
    absl::Mutex mu;
    AttachCall* call ABSL_GUARDED_BY(mu);
    bool alarm_set ABSL_GUARDED_BY(mu) = false;
    grpc::Status status ABSL_GUARDED_BY(mu);
  };

  AttachCall(v1::Registry::AsyncService* service, CqLoop* loop, Fleet* fleet, const std::string* control_id,
             const std::string* cluster_token, const std::string* reply_subject)
      : service_(service),
        loop_(loop),
        fleet_(fleet),
        control_id_(control_id),
        cluster_token_(cluster_token),
        reply_subject_(reply_subject),
        door_(std::make_shared<Door>()) {
    absl::MutexLock lock(&door_->mu);
    door_->call = this;
  }

  void OnRequested(bool ok) {
    if (!ok) {  // the server is going away; this call never started (nor will its done tag come)
      delete this;
      return;
    }
    outstanding_ = 1;  // the done tag
    if (loop_->stopping()) return;  // cancelled by the server's shutdown: wait for the done tag
    Listen(service_, loop_, fleet_, control_id_, cluster_token_, reply_subject_);
    welcome_.mutable_welcome()->set_control_id(*control_id_);
    welcome_.mutable_welcome()->set_reply_subject(*reply_subject_);
    welcome_.mutable_welcome()->set_answer_key(NewAnswerKey());
    // Only the cluster's gateways may join the fleet.
    if (!ConstantTimeEquals(Metadata(&ctx_, kClusterTokenKey), *cluster_token_)) {
      spdlog::warn("attach refused: missing or wrong cluster token (peer {})", ctx_.peer());
      StartFinish(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or wrong cluster token"));
      return;
    }
    StartRead();
  }

  void StartRead() {
    ++outstanding_;
    stream_.Read(&in_, &read_ev_);
  }

  void OnRead(bool ok) {
    --outstanding_;
    if (finishing_ || loop_->stopping()) {
      MaybeDelete();
      return;
    }
    if (!ok) {
      StartFinish(grpc::Status::OK);
      return;
    }
    if (gateway_id_.empty() && !in_.has_hello()) {
      StartFinish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello must come first"));
      return;
    }
    const absl::Time now = absl::Now();
    switch (in_.kind_case()) {
      case v1::GatewayMessage::kHello: {
        if (!gateway_id_.empty() || in_.hello().gateway_id().empty() || in_.hello().gateway_id().size() > 256) {
          StartFinish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "one hello with a gateway_id first"));
          return;
        }
        std::weak_ptr<Door> door = door_;
        token_ = fleet_->Attach(
            in_.hello(), now,
            [door, cq = loop_->cq()](const char* why) {
              if (auto d = door.lock()) AskToFinish(d.get(), cq, why);
            },
            welcome_.welcome().answer_key());
        if (token_ == 0 && fleet_->closed()) {
          StartFinish(grpc::Status(grpc::StatusCode::UNAVAILABLE, Fleet::kStopping));
          return;
        }
        if (token_ == 0) {
          // Never a replacement: the member keeps its place until its lease runs out.
          spdlog::warn("attach refused: gateway {} is already attached", in_.hello().gateway_id());
          StartFinish(grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                                   "a gateway with this ID is attached and its lease is fresh"));
          return;
        }
        gateway_id_ = in_.hello().gateway_id();
        spdlog::info("gateway {} attached ({})", gateway_id_, in_.hello().address());
        ++outstanding_;
        writing_ = true;
        stream_.Write(welcome_, &write_ev_);
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
    StartRead();
  }

  void OnWritten(bool) {
    --outstanding_;
    writing_ = false;
    if (finish_after_write_ && !loop_->stopping()) SendFinish();
    finish_after_write_ = false;
    MaybeDelete();
  }

  // From the sweeper (lease expired) or the stop (fleet closed): once, onto
  // the loop.
  static void AskToFinish(Door* door, grpc::ServerCompletionQueue* cq, const char* why) {
    absl::MutexLock lock(&door->mu);
    if (door->call == nullptr || door->alarm_set) return;
    door->alarm_set = true;
    door->status = grpc::Status(grpc::StatusCode::UNAVAILABLE, why);
    door->call->alarm_.Set(cq, gpr_now(GPR_CLOCK_MONOTONIC), &door->call->alarm_ev_);
  }

  void OnAlarm(bool) {
    grpc::Status status;
    {
      absl::MutexLock lock(&door_->mu);
      door_->alarm_set = false;
      status = door_->status;
    }
    if (outstanding_ > 0 && !loop_->stopping()) StartFinish(status);
    MaybeDelete();
  }

  // Ends the stream once; after a write in flight if there is one.
  void StartFinish(const grpc::Status& status) {
    if (finishing_) return;
    finishing_ = true;
    status_ = status;
    if (writing_) {
      finish_after_write_ = true;
      return;
    }
    SendFinish();
  }

  void SendFinish() {
    ++outstanding_;
    stream_.Finish(status_, &finish_ev_);
  }

  void OnFinished(bool) {
    --outstanding_;
    MaybeDelete();
  }

  void OnDone(bool) {
    --outstanding_;
    // Cancelled (the gateway went away, or the server is stopping): a read
    // in flight comes back failed, and that finishes the stream.
    MaybeDelete();
  }

  void MaybeDelete() {
    if (outstanding_ > 0) return;
    {
      absl::MutexLock lock(&door_->mu);
      if (door_->alarm_set) return;  // its tag is still to come
      door_->call = nullptr;
    }
    if (token_) {
      fleet_->Detach(gateway_id_, token_);
      spdlog::info("gateway {} detached", gateway_id_);
    }
    delete this;
  }

  v1::Registry::AsyncService* const service_;
  CqLoop* const loop_;
  Fleet* const fleet_;
  const std::string* const control_id_;
  const std::string* const cluster_token_;
  const std::string* const reply_subject_;
  std::shared_ptr<Door> door_;

  grpc::ServerContext ctx_;
  grpc::ServerAsyncReaderWriter<v1::ControlMessage, v1::GatewayMessage> stream_{&ctx_};
  grpc::Alarm alarm_;
  MemberEvent<AttachCall, &AttachCall::OnRequested> requested_ev_{this};
  MemberEvent<AttachCall, &AttachCall::OnRead> read_ev_{this};
  MemberEvent<AttachCall, &AttachCall::OnWritten> write_ev_{this};
  MemberEvent<AttachCall, &AttachCall::OnFinished> finish_ev_{this};
  MemberEvent<AttachCall, &AttachCall::OnDone> done_ev_{this};
  MemberEvent<AttachCall, &AttachCall::OnAlarm> alarm_ev_{this};

  // Loop thread only.
  int outstanding_ = 0;  // operations handed to gRPC whose tags are not back
  bool writing_ = false;
  bool finishing_ = false;
  bool finish_after_write_ = false;
  grpc::Status status_;
  v1::GatewayMessage in_;
  v1::ControlMessage welcome_;
  std::string gateway_id_;
  uint64_t token_ = 0;
};

}  // namespace

void RegistryService::Listen(CqLoop* loop) {
  AttachCall::Listen(&async_, loop, fleet_, &control_id_, &cluster_token_, &reply_subject_);
}

}  // namespace switchboard::control
