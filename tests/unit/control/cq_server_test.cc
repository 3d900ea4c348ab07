#include "control/cq_server.h"

#include <chrono>
#include <future>
#include <mutex>
#include <utility>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/wait.h"

namespace switchboard::control {
namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using Call = UnaryCall<Health::AsyncService, HealthCheckRequest, HealthCheckResponse>;

// A server on a CqLoop whose Check answers on the loop for service
// "inline" (SERVING) and "refused" (NOT_FOUND); any other call is held until
// the test finishes it from its own thread, as control's bus thread does.
class CqServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    loop_ = std::make_unique<CqLoop>(builder.AddCompletionQueue());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    Call::Listen(&service_, &Health::AsyncService::RequestCheck, loop_.get(), &handler_);
    loop_->Start();
    stub_ = Health::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port_), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override { Stop(); }
  void Stop() {
    if (server_ == nullptr) return;
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    loop_->Stop();
    server_.reset();
  }
  grpc::StatusCode Check(const std::string& service) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    HealthCheckRequest req;
    req.set_service(service);
    HealthCheckResponse resp;
    grpc::Status st = stub_->Check(&ctx, req, &resp);
    if (st.ok() && resp.status() != HealthCheckResponse::SERVING) return grpc::StatusCode::INTERNAL;
    return st.error_code();
  }
  bool WaitUntilAllCollected() {
    return testing::WaitFor([this] { return loop_->unreaped() == 0; }, absl::Seconds(5));
  }
  size_t Held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }
  // `n` calls held, finished from this thread; returns once their callers
  // have their answers.
  void AnswerElsewhere(int n) {
    std::vector<std::future<grpc::StatusCode>> calls;
    for (int i = 0; i < n; ++i) calls.push_back(std::async(std::launch::async, [this] { return Check("held"); }));
    testing::WaitFor([this, n] { return Held() >= static_cast<size_t>(n); }, absl::Seconds(10));
    ASSERT_EQ(Held(), static_cast<size_t>(n));
    std::vector<std::pair<HealthCheckResponse*, UnaryResponder*>> held;
    {
      std::lock_guard<std::mutex> lock(mu_);
      held.swap(held_);
    }
    for (auto& [resp, done] : held) {
      resp->set_status(HealthCheckResponse::SERVING);
      done->Finish(grpc::Status::OK);
    }
    for (auto& c : calls) EXPECT_EQ(c.get(), grpc::StatusCode::OK);
  }

  Health::AsyncService service_;
  std::mutex mu_;
  std::vector<std::pair<HealthCheckResponse*, UnaryResponder*>> held_;
  Call::Handler handler_ = [this](grpc::ServerContext*, const HealthCheckRequest* req, HealthCheckResponse* resp,
                                  UnaryResponder* done) {
    if (req->service() == "inline") {
      resp->set_status(HealthCheckResponse::SERVING);
      done->Finish(grpc::Status::OK);
    } else if (req->service() == "refused") {
      done->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "no such service"));
    } else {
      std::lock_guard<std::mutex> lock(mu_);
      held_.emplace_back(resp, done);
    }
  };
  int port_ = 0;
  std::unique_ptr<CqLoop> loop_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Health::Stub> stub_;
};

TEST_F(CqServerTest, AnswersFinishedElsewhereDoNotWakeTheLoopAndAreCollectedAtItsNextEvent) {
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(Check("inline"), grpc::StatusCode::OK);
    EXPECT_EQ(Check("refused"), grpc::StatusCode::NOT_FOUND);
  }
  // The loop's own answers are collected even with no further event.
  EXPECT_TRUE(WaitUntilAllCollected());
  AnswerElsewhere(8);
  // Answered, and the loop slept through it: nothing collected them yet.
  EXPECT_EQ(loop_->unreaped(), 8);
  // The next call is an event of the loop's; after it, and on the loop's
  // timer for its own answer, everything is collected.
  EXPECT_EQ(Check("inline"), grpc::StatusCode::OK);
  EXPECT_TRUE(WaitUntilAllCollected());
}

TEST_F(CqServerTest, StoppingCollectsAnswersNotCollectedYet) {
  AnswerElsewhere(8);
  EXPECT_EQ(loop_->unreaped(), 8);
  Stop();
  EXPECT_EQ(loop_->unreaped(), 0);  // each call deleted (under ASan, one left is a leak)
}

}  // namespace
}  // namespace switchboard::control
