#pragma once

#include <atomic>
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
// Unary answers complete on a second queue that nobody waits on (the loop
// reaps it after each event): an answer finished from the bus thread must not
// wake the loop thread. Measured (BENCHMARKS.md, seventh session): that
// wake-up put the loop thread on the second vCPU just as the caller was woken
// with its answer, and the caller waited for a CPU (scheduling delay median
// 20 µs, p90 53 µs; 9 and 31 without it).
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
  // Where unary answers complete: nobody waits on it, so an answer finished
  // from another thread (the bus's) does not wake the loop. The loop reaps
  // it after each event of its own queue, and within kReapMs when answers
  // were out as it went to wait; one finished from another thread while the
  // loop sleeps waits for the next event (gateways' heartbeats, health
  // checks, the next call) or the stop.
  grpc::CompletionQueue* finish_cq() { return &finish_cq_; }
  // Any thread, before starting an operation on finish_cq().
  void FinishStarted() { unreaped_.fetch_add(1, std::memory_order_relaxed); }
  // Answers started and not reaped yet (for tests).
  int unreaped() const { return unreaped_.load(std::memory_order_relaxed); }
  // Loop thread only.
  bool stopping() const { return stopping_; }
  void Start() {
    thread_ = std::thread([this] {
      void* tag = nullptr;
      bool ok = false;
      for (;;) {
        const gpr_timespec until = unreaped_.load(std::memory_order_relaxed) > 0
                                       ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(kReapMs, GPR_TIMESPAN))
                                       : gpr_inf_future(GPR_CLOCK_MONOTONIC);
        const auto st = cq_->AsyncNext(&tag, &ok, until);
        if (st == grpc::CompletionQueue::SHUTDOWN) break;
        if (st == grpc::CompletionQueue::GOT_EVENT) static_cast<CqEvent*>(tag)->Proceed(ok);
        Reap();
      }
      // Stopped: no answer is started any more (the server is shut down and
      // nobody else finishes calls); collect the last ones.
      finish_cq_.Shutdown();
      while (finish_cq_.Next(&tag, &ok)) Collect(tag, ok);
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
  static constexpr int kReapMs = 50;

  void OnStop(bool) {
    stopping_ = true;
    cq_->Shutdown();
  }
  // Completed answers: their calls are deleted here, on the loop thread.
  void Reap() {
    void* tag = nullptr;
    bool ok = false;
    while (unreaped_.load(std::memory_order_relaxed) > 0 &&
           finish_cq_.AsyncNext(&tag, &ok, gpr_inf_past(GPR_CLOCK_MONOTONIC)) == grpc::CompletionQueue::GOT_EVENT) {
      Collect(tag, ok);
    }
  }
  void Collect(void* tag, bool ok) {
    unreaped_.fetch_sub(1, std::memory_order_relaxed);
    static_cast<CqEvent*>(tag)->Proceed(ok);
  }

  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  grpc::CompletionQueue finish_cq_;
  std::atomic<int> unreaped_{0};
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
    (service->*request)(&call->ctx_, &call->req_, &call->writer_, loop->finish_cq(), loop->cq(), call);
  }

  void Finish(const grpc::Status& status) override {
    loop_->FinishStarted();
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
