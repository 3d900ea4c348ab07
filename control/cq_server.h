#pragma once

#include <functional>
#include <memory>
#include <thread>
#include <utility>

#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

namespace switchboard::control {

// Control's gRPC server runs on gRPC's asynchronous API with one completion
// queue and one thread (CqLoop), not on the callback API. Why, measured
// (BENCHMARKS.md, sixth session): with any callback method registered, gRPC
// 1.51 polls through two "nexting" threads that hand the poller role to each
// other on every event (a futex wake-up each time, ~5 futex calls per
// UserConnections call), and an answer finished from the bus thread wakes
// one of them as well. One thread that alone polls has nobody to hand over
// to: an answer written from the bus thread costs one eventfd kick.
//
// Everything a call does on the queue runs on CqLoop's thread: handlers must
// return quickly and never block (as reactions did).

// Something handed to gRPC as a tag; Proceed runs on the loop's thread when
// the operation completes.
class CqEvent {
 public:
  virtual void Proceed(bool ok) = 0;

 protected:
  ~CqEvent() = default;
};

// A tag that calls a member function of its owner.
template <typename T, void (T::*Method)(bool)>
class MemberEvent final : public CqEvent {
 public:
  explicit MemberEvent(T* owner) : owner_(owner) {}
  void Proceed(bool ok) override { (owner_->*Method)(ok); }

 private:
  T* const owner_;
};

// The completion queue and the one thread that drains it. Stopping is done
// on that thread: from then on (stopping() true) nothing may start another
// operation on the queue, and what is still in flight is drained.
class CqLoop {
 public:
  explicit CqLoop(std::unique_ptr<grpc::ServerCompletionQueue> cq) : cq_(std::move(cq)) {}
  ~CqLoop() { Stop(); }
  grpc::ServerCompletionQueue* cq() const { return cq_.get(); }
  // Loop thread only.
  bool stopping() const { return stopping_; }
  void Start() {
    thread_ = std::thread([this] {
      void* tag = nullptr;
      bool ok = false;
      while (cq_->Next(&tag, &ok)) static_cast<CqEvent*>(tag)->Proceed(ok);
    });
  }
  // After the server's Shutdown, and once no other thread can start an
  // operation (finish a call) any more. Returns when the queue is drained.
  void Stop() {
    if (!thread_.joinable()) return;
    stop_alarm_.Set(cq_.get(), gpr_now(GPR_CLOCK_MONOTONIC), &stop_ev_);
    thread_.join();
  }

 private:
  void OnStop(bool) {
    stopping_ = true;
    cq_->Shutdown();
  }

  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;
  grpc::Alarm stop_alarm_;
  MemberEvent<CqLoop, &CqLoop::OnStop> stop_ev_{this};
  bool stopping_ = false;
};

// How a unary handler answers: Finish exactly once, from any thread, after
// filling the response (which it must not touch afterwards).
class UnaryResponder {
 public:
  virtual void Finish(const grpc::Status& status) = 0;

 protected:
  ~UnaryResponder() = default;
};

// One unary call of one method: waits for the call, starts waiting for the
// next, runs the handler, deletes itself once the answer is sent.
template <typename AsyncService, typename Req, typename Resp>
class UnaryCall final : public CqEvent, public UnaryResponder {
 public:
  using RequestFn = void (AsyncService::*)(grpc::ServerContext*, Req*, grpc::ServerAsyncResponseWriter<Resp>*,
                                           grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  // The handler is shared by every call of the method and outlives them.
  using Handler = std::function<void(grpc::ServerContext*, const Req*, Resp*, UnaryResponder*)>;

  static void Listen(AsyncService* service, RequestFn request, CqLoop* loop, const Handler* handler) {
    auto* call = new UnaryCall(service, request, loop, handler);
    (service->*request)(&call->ctx_, &call->req_, &call->writer_, loop->cq(), loop->cq(), call);
  }

  void Finish(const grpc::Status& status) override {
    if (status.ok()) {
      writer_.Finish(resp_, status, this);
    } else {
      writer_.FinishWithError(status, this);
    }
  }

  void Proceed(bool ok) override {
    // The answer is out, or the server is going away before a call came; a
    // call that came as the loop stops is dropped (the server cancelled it).
    if (started_ || !ok || loop_->stopping()) {
      delete this;
      return;
    }
    started_ = true;
    Listen(service_, request_, loop_, handler_);
    (*handler_)(&ctx_, &req_, &resp_, this);
  }

 private:
  UnaryCall(AsyncService* service, RequestFn request, CqLoop* loop, const Handler* handler)
      : service_(service), request_(request), loop_(loop), handler_(handler) {}

  AsyncService* const service_;
  const RequestFn request_;
  CqLoop* const loop_;
  const Handler* const handler_;
  grpc::ServerContext ctx_;
  Req req_;
  Resp resp_;
  grpc::ServerAsyncResponseWriter<Resp> writer_{&ctx_};
  bool started_ = false;  // loop thread only
};

}  // namespace switchboard::control
