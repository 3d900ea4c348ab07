#include "control/scatter_gather.h"

#include <chrono>
#include <future>
#include <map>
#include <optional>
#include <tuple>

#include "common/answer_mac.h"
#include "gateway/bus_handler.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/in_memory_bus.h"

namespace switchboard::control {
namespace {

using ::switchboard::testing::InMemoryBus;
constexpr char kSubject[] = "switchboard.test.gateways";

// A gateway on the in-memory bus. It answers at once, never, or when told.
class FakeGateway {
 public:
  enum class Mode { kAnswer, kSilent, kHold };
  FakeGateway(InMemoryBus* bus, std::string id, Mode mode) : bus_(bus), id_(std::move(id)), mode_(mode) {
    (void)bus_->Subscribe(kSubject, [this](const std::string&, const std::string& reply, const std::string& data) {
      v1::BusRequest req;
      ASSERT_TRUE(req.ParseFromString(data));
      ++requests_;
      if (mode_ == Mode::kAnswer) Answer(req, reply);
      if (mode_ == Mode::kHold) held_.emplace_back(req, reply);
    });
  }
  void Answer(const v1::BusRequest& req, const std::string& reply_to) {
    v1::BusReply reply;
    reply.set_format_version(1);
    reply.set_request_id(req.request_id());
    reply.set_gateway_id(id_);
    reply.set_closed(1);
    (void)bus_->Publish(reply_to, reply.SerializeAsString(), "");
  }
  void ReleaseHeld() {
    for (auto& [req, reply] : held_) Answer(req, reply);
    held_.clear();
  }
  int requests() const { return requests_; }
  void set_mode(Mode mode) { mode_ = mode; }

 private:
  InMemoryBus* bus_;
  std::string id_;
  std::atomic<Mode> mode_;
  std::atomic<int> requests_{0};
  std::vector<std::pair<v1::BusRequest, std::string>> held_;
};

class ScatterGatherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sg_ = std::make_unique<ScatterGather>(
        &bus_, &timers_, [this] { return live_; }, kSubject,
        [this] {
          absl::MutexLock lock(&mu_);
          return not_ready_;
        });
    ASSERT_TRUE(sg_->Start().ok());
  }

  void set_not_ready(const std::string& why) {
    absl::MutexLock lock(&mu_);
    not_ready_ = why;
  }

  static v1::BusRequest Terminate() {
    v1::BusRequest req;
    req.mutable_terminate()->set_app_id("demo");
    req.mutable_terminate()->set_user_id("42");
    return req;
  }

  // Calls and waits (bounded) for the result.
  absl::StatusOr<GatherResult> CallAndWait(absl::Duration deadline, v1::BusRequest req = v1::BusRequest()) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<GatherResult>>>();
    auto future = promise->get_future();
    if (req.op_case() == v1::BusRequest::OP_NOT_SET) {
      req.mutable_user_query()->set_app_id("demo");
      req.mutable_user_query()->set_user_id("42");
    }
    sg_->Call(req, absl::Now() + deadline, [promise](absl::StatusOr<GatherResult> r) { promise->set_value(std::move(r)); });
    if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      return absl::DeadlineExceededError("test: no answer within 10 s");
    }
    return future.get();
  }

  InMemoryBus bus_;
  TimerQueue timers_;
  std::vector<std::string> live_;
  absl::Mutex mu_;
  std::string not_ready_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ScatterGather> sg_;
};

TEST_F(ScatterGatherTest, CompletesAsSoonAsEveryGatewayAnswered) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kAnswer);
  FakeGateway b(&bus_, "gw-b", FakeGateway::Mode::kAnswer);
  live_ = {"gw-a", "gw-b"};
  const absl::Time start = absl::Now();
  auto r = CallAndWait(absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->complete);
  EXPECT_TRUE(r->missing.empty());
  EXPECT_EQ(r->answers.size(), 2u);
  EXPECT_EQ(r->asked, (std::vector<std::string>{"gw-a", "gw-b"}));
  // It did not wait for the 30 s deadline.
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(sg_->in_flight(), 0u);
}

TEST_F(ScatterGatherTest, MissingGatewayGivesPartialResultAtDeadline) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kAnswer);
  FakeGateway b(&bus_, "gw-b", FakeGateway::Mode::kSilent);
  live_ = {"gw-a", "gw-b"};
  const absl::Time start = absl::Now();
  auto r = CallAndWait(absl::Milliseconds(100));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(100));
  EXPECT_FALSE(r->complete);
  EXPECT_EQ(r->missing, (std::vector<std::string>{"gw-b"}));
  EXPECT_EQ(r->answers.count("gw-a"), 1u);
  EXPECT_EQ(b.requests(), 1);
}

TEST_F(ScatterGatherTest, LateAnswerAfterDeadlineIsIgnored) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kAnswer);
  FakeGateway late(&bus_, "gw-late", FakeGateway::Mode::kHold);
  live_ = {"gw-a", "gw-late"};
  auto r = CallAndWait(absl::Milliseconds(50));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->complete);
  EXPECT_EQ(r->missing, (std::vector<std::string>{"gw-late"}));
  late.ReleaseHeld();  // arrives after the call finished: dropped, no second callback
  EXPECT_EQ(sg_->in_flight(), 0u);
}

TEST_F(ScatterGatherTest, SlowButInTimeAnswerCompletes) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kAnswer);
  FakeGateway slow(&bus_, "gw-slow", FakeGateway::Mode::kHold);
  live_ = {"gw-a", "gw-slow"};
  auto promise = std::make_shared<std::promise<absl::StatusOr<GatherResult>>>();
  auto future = promise->get_future();
  v1::BusRequest req;
  req.mutable_terminate()->set_user_id("42");
  sg_->Call(req, absl::Now() + absl::Seconds(30), [promise](absl::StatusOr<GatherResult> r) { promise->set_value(std::move(r)); });
  EXPECT_EQ(future.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  EXPECT_EQ(sg_->in_flight(), 1u);
  slow.ReleaseHeld();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto r = future.get();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->complete);
  EXPECT_EQ(r->answers.size(), 2u);
}

TEST_F(ScatterGatherTest, UnaskedGatewayAnswerIsKeptButNotAwaited) {
  // A gateway that attached after the call started may still answer.
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kAnswer);
  FakeGateway extra(&bus_, "gw-new", FakeGateway::Mode::kAnswer);
  live_ = {"gw-a"};
  auto r = CallAndWait(absl::Seconds(30));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->complete);
  EXPECT_EQ(r->answers.count("gw-a"), 1u);
}

TEST_F(ScatterGatherTest, KnownEmptyFleetIsCompleteAtOnce) {
  live_ = {};
  auto r = CallAndWait(absl::Seconds(30));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->complete);
  EXPECT_TRUE(r->answers.empty());
  EXPECT_EQ(bus_.published(), 0);
}

TEST_F(ScatterGatherTest, BusDownIsUnavailableAtOnce) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kAnswer);
  live_ = {"gw-a"};
  bus_.set_connected(false);
  auto r = CallAndWait(absl::Seconds(30));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(sg_->in_flight(), 0u);
}

TEST_F(ScatterGatherTest, MalformedRepliesAreIgnored) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kHold);
  live_ = {"gw-a"};
  auto promise = std::make_shared<std::promise<absl::StatusOr<GatherResult>>>();
  auto future = promise->get_future();
  sg_->Call(v1::BusRequest(), absl::Now() + absl::Milliseconds(100),
            [promise](absl::StatusOr<GatherResult> r) { promise->set_value(std::move(r)); });
  (void)bus_.Publish("_INBOX.test1", "\xff\xff garbage", "");
  (void)bus_.Publish("_INBOX.test1", v1::BusReply().SerializeAsString(), "");  // no gateway_id
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto r = future.get();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->complete);
  EXPECT_EQ(r->missing, (std::vector<std::string>{"gw-a"}));
}

TEST_F(ScatterGatherTest, RequestCarriesFormatVersionAndId) {
  std::vector<v1::BusRequest> seen;
  (void)bus_.Subscribe(kSubject, [&seen](const std::string&, const std::string&, const std::string& data) {
    v1::BusRequest req;
    req.ParseFromString(data);
    seen.push_back(req);
  });
  live_ = {"gw-x"};
  (void)CallAndWait(absl::Milliseconds(10));
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].format_version(), 1u);
  EXPECT_FALSE(seen[0].request_id().empty());
  EXPECT_EQ(seen[0].user_query().user_id(), "42");
}

// With a commands subject and a route: a command goes there, and only there,
// when the route says every gateway asked reads it (and the fleet is known
// whole); otherwise, and a query always, on the gateways subject. A gateway
// answering from either completes the call.
TEST_F(ScatterGatherTest, CommandsGoToTheCommandsSubjectOnlyWhenEveryGatewayAskedReadsIt) {
  constexpr char kCommands[] = "switchboard.test.commands";
  std::atomic<bool> all_read{true};
  std::vector<std::string> routed;  // what the route was asked about
  sg_ = std::make_unique<ScatterGather>(
      &bus_, &timers_, [this] { return live_; }, kSubject,
      [this] {
        absl::MutexLock lock(&mu_);
        return not_ready_;
      });
  sg_->set_commands_subject(kCommands, [&](const std::vector<std::string>& asked) {
    routed = asked;
    return all_read.load();
  });
  ASSERT_TRUE(sg_->Start().ok());
  absl::Mutex heard_mu;
  std::vector<std::string> heard;  // the subject of each request, in order
  for (const char* subject : {kCommands, kSubject}) {
    ASSERT_TRUE(bus_.Subscribe(subject, [&](const std::string& subj, const std::string& reply, const std::string& data) {
                      v1::BusRequest req;
                      ASSERT_TRUE(req.ParseFromString(data));
                      {
                        absl::MutexLock lock(&heard_mu);
                        heard.push_back(subj);
                      }
                      v1::BusReply answer;  // gw-a, from whichever it heard
                      answer.set_format_version(1);
                      answer.set_request_id(req.request_id());
                      answer.set_gateway_id("gw-a");
                      (void)bus_.Publish(reply, answer.SerializeAsString(), "");
                    }).ok());
  }
  auto heard_now = [&] {
    absl::MutexLock lock(&heard_mu);
    std::vector<std::string> out;
    out.swap(heard);
    return out;
  };
  live_ = {"gw-a"};

  auto r = CallAndWait(absl::Seconds(30), Terminate());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->complete);
  EXPECT_EQ(heard_now(), std::vector<std::string>{kCommands});
  EXPECT_EQ(routed, std::vector<std::string>{"gw-a"});

  r = CallAndWait(absl::Seconds(30));  // a user query
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(heard_now(), std::vector<std::string>{kSubject});

  all_read = false;  // one gateway asked does not read it
  r = CallAndWait(absl::Seconds(30), Terminate());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->complete);
  EXPECT_EQ(heard_now(), std::vector<std::string>{kSubject});

  all_read = true;  // the fleet is not known whole: gateways not known yet hear it
  set_not_ready("control started 10ms ago");
  r = CallAndWait(absl::Seconds(30), Terminate());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(heard_now(), std::vector<std::string>{kSubject});

  // The beacon gateways' loops listen for: on the commands subject, with
  // no operation (and no reply subject).
  sg_->SendBeacon();
  EXPECT_EQ(heard_now(), std::vector<std::string>{kCommands});
}

// Two gateways' threads read the two subjects: a command must not go out on
// the new subject while one sent earlier on the old one is still in flight,
// or a gateway could run them out of call order. The first command after a
// change of subject waits for the earlier ones' answers, later ones queue
// behind it, and all go out in call order.
class CommandRouteSwitchTest : public ScatterGatherTest {
 protected:
  static constexpr char kCommands[] = "switchboard.test.commands";
  void SetUp() override {
    sg_ = std::make_unique<ScatterGather>(&bus_, &timers_, [this] { return live_; }, kSubject);
    sg_->set_commands_subject(kCommands, [this](const std::vector<std::string>&) { return all_read_.load(); });
    ASSERT_TRUE(sg_->Start().ok());
    for (const char* subject : {kCommands, kSubject}) {
      ASSERT_TRUE(bus_.Subscribe(subject, [this](const std::string& subj, const std::string& reply,
                                                 const std::string& data) {
                        v1::BusRequest req;
                        ASSERT_TRUE(req.ParseFromString(data));
                        absl::MutexLock lock(&mu_);
                        heard_.push_back(subj + " " + req.request_id());
                        // The gateways subject's answers wait until told
                        // (a gateway's NATS thread still busy with them).
                        if (subj == kSubject) {
                          waiting_.emplace_back(req.request_id(), reply);
                        } else {
                          answer_now_.emplace_back(req.request_id(), reply);
                        }
                      }).ok());
    }
    live_ = {"gw-a"};
  }
  // Answers what the commands subject carried (outside the bus's callback).
  void AnswerCommands() { AnswerAll(&answer_now_); }
  void AnswerGatewaysSubject() { AnswerAll(&waiting_); }
  void AnswerAll(std::vector<std::pair<std::string, std::string>>* which) {
    std::vector<std::pair<std::string, std::string>> now;
    {
      absl::MutexLock lock(&mu_);
      now.swap(*which);
    }
    for (const auto& [id, reply] : now) {
      v1::BusReply answer;
      answer.set_format_version(1);
      answer.set_request_id(id);
      answer.set_gateway_id("gw-a");
      (void)bus_.Publish(reply, answer.SerializeAsString(), "");
    }
  }
  std::vector<std::string> heard() {
    absl::MutexLock lock(&mu_);
    return heard_;
  }
  // Starts a terminate with request ID `id`; its result lands in results_.
  void Start(const std::string& id, absl::Duration deadline = absl::Seconds(30)) {
    v1::BusRequest req = Terminate();
    req.set_request_id(id);
    sg_->Call(req, absl::Now() + deadline, [this, id](absl::StatusOr<GatherResult> r) {
      absl::MutexLock lock(&mu_);
      results_[id] = r.ok() && r->complete;
    });
  }
  bool Finished(const std::string& id, absl::Duration within = absl::Seconds(10)) {
    absl::MutexLock lock(&mu_);
    auto done = [this, &id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return results_.count(id) > 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), within);
  }

  std::atomic<bool> all_read_{false};
  std::vector<std::string> heard_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, std::string>> waiting_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, std::string>> answer_now_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> results_ ABSL_GUARDED_BY(mu_);
};

TEST_F(CommandRouteSwitchTest, CommandsAfterAChangeOfSubjectWaitForTheEarlierOnesAnswers) {
  const std::string g = kSubject, c = kCommands;
  Start("A");  // on the gateways subject, not answered yet
  all_read_ = true;
  Start("B");  // wants the commands subject: waits for A
  Start("C");  // behind B
  EXPECT_EQ(heard(), std::vector<std::string>{g + " A"});
  EXPECT_FALSE(Finished("B", absl::Milliseconds(10)));
  AnswerGatewaysSubject();  // A answered: B, then C, go out
  ASSERT_TRUE(Finished("A"));
  EXPECT_EQ(heard(), (std::vector<std::string>{g + " A", c + " B", c + " C"}));
  AnswerCommands();
  ASSERT_TRUE(Finished("B"));
  ASSERT_TRUE(Finished("C"));
  EXPECT_EQ(sg_->route_waits(), 1u);
  {
    absl::MutexLock lock(&mu_);
    EXPECT_TRUE(results_["A"] && results_["B"] && results_["C"]);
  }

  // Nothing in flight: a change of subject waits for nothing.
  all_read_ = false;
  Start("D");
  EXPECT_EQ(heard().back(), g + " D");
  AnswerGatewaysSubject();
  ASSERT_TRUE(Finished("D"));
  EXPECT_EQ(sg_->route_waits(), 1u);
  EXPECT_EQ(sg_->in_flight(), 0u);
}

TEST_F(CommandRouteSwitchTest, AWaitForAnAnswerThatDoesNotComeIsBounded) {
  const std::string g = kSubject, c = kCommands;
  Start("A");  // never answered before its 30 s deadline
  all_read_ = true;
  const absl::Time start = absl::Now();
  Start("B");
  Start("C");
  // B goes out after kRouteSwitchWait, not after A's deadline; C behind it.
  for (int i = 0; i < 1000 && heard().size() < 3; ++i) absl::SleepFor(absl::Milliseconds(5));
  const absl::Duration waited = absl::Now() - start;
  EXPECT_EQ(heard(), (std::vector<std::string>{g + " A", c + " B", c + " C"}));
  EXPECT_GE(waited, ScatterGather::kRouteSwitchWait);
  EXPECT_LT(waited, absl::Seconds(5));
  AnswerCommands();
  ASSERT_TRUE(Finished("B"));
  ASSERT_TRUE(Finished("C"));
  EXPECT_FALSE(Finished("A", absl::Milliseconds(1)));  // still waiting for its gateway
  AnswerGatewaysSubject();
  ASSERT_TRUE(Finished("A"));
}

TEST_F(CommandRouteSwitchTest, CloseEndsTheCommandsStillWaiting) {
  Start("A");
  all_read_ = true;
  Start("B");
  sg_->Close(absl::UnavailableError("shutting down"));
  ASSERT_TRUE(Finished("A"));
  ASSERT_TRUE(Finished("B"));
  absl::SleepFor(ScatterGather::kRouteSwitchWait * 2);  // the hold timer, cancelled, publishes nothing
  EXPECT_EQ(heard(), std::vector<std::string>{std::string(kSubject) + " A"});
}

TEST_F(ScatterGatherTest, TerminateIsPublishedEvenWhenTheFleetLooksEmpty) {
  // Right after a control restart nobody has re-attached yet, but gateways
  // are out there: the terminate must reach them.
  FakeGateway unknown(&bus_, "gw-unknown", FakeGateway::Mode::kAnswer);
  live_ = {};
  set_not_ready("control started 10ms ago");
  auto r = CallAndWait(absl::Seconds(30), Terminate());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(unknown.requests(), 1);
  EXPECT_FALSE(r->complete);
  EXPECT_EQ(r->incomplete_reason, "control started 10ms ago");
  // Its closes count, and it is named.
  EXPECT_EQ(r->answers.count("gw-unknown"), 1u);
  // Bounded by the short window, not the 30 s deadline.
  EXPECT_EQ(sg_->in_flight(), 0u);
}

TEST_F(ScatterGatherTest, KnownEmptyFleetStillPublishesCommands) {
  live_ = {};
  auto r = CallAndWait(absl::Seconds(30), Terminate());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->complete);
  EXPECT_EQ(bus_.published(), 1);
}

TEST_F(ScatterGatherTest, NotReadyReplicaNeverAnswersComplete) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kAnswer);
  live_ = {"gw-a"};
  set_not_ready("fleet not known yet");
  auto r = CallAndWait(absl::Seconds(30));
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->complete);
  EXPECT_EQ(r->incomplete_reason, "fleet not known yet");
  EXPECT_EQ(r->answers.count("gw-a"), 1u);
  set_not_ready("");
  r = CallAndWait(absl::Seconds(30));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->complete);
  EXPECT_EQ(r->incomplete_reason, "");
}

TEST_F(ScatterGatherTest, MissingGatewaysAreTheReason) {
  FakeGateway b(&bus_, "gw-b", FakeGateway::Mode::kSilent);
  live_ = {"gw-b"};
  auto r = CallAndWait(absl::Milliseconds(50));
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->complete);
  EXPECT_FALSE(r->incomplete_reason.empty());
}

TEST_F(ScatterGatherTest, EveryGatewaysFirstAnswerCountsMemberOrNot) {
  // gw-a answers twice (closed 1, then 7); gw-cut, not in this replica's
  // fleet (its link to control is cut) but on the bus, answers too: the
  // sessions it closed are real and count.
  (void)bus_.Subscribe(kSubject, [this](const std::string&, const std::string& reply, const std::string& data) {
    v1::BusRequest req;
    ASSERT_TRUE(req.ParseFromString(data));
    for (auto [id, closed] : {std::pair<const char*, uint32_t>{"gw-cut", 2}, {"gw-a", 1}, {"gw-a", 7}}) {
      v1::BusReply r;
      r.set_format_version(1);
      r.set_request_id(req.request_id());
      r.set_gateway_id(id);
      r.set_closed(closed);
      (void)bus_.Publish(reply, r.SerializeAsString(), "");
    }
  });
  live_ = {"gw-a"};
  auto r = CallAndWait(absl::Seconds(30), Terminate());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->complete);
  ASSERT_EQ(r->answers.size(), 2u);
  EXPECT_EQ(r->answers.at("gw-a").closed(), 1u);
  EXPECT_EQ(r->answers.at("gw-cut").closed(), 2u);
}

// A command says how long it may be asked again (its deadline and a
// second), so gateways remember its ID that long and never run a re-ask
// twice; a query needs no memory.
TEST_F(ScatterGatherTest, CommandsSayHowLongTheyMayBeAskedAgain) {
  std::vector<v1::BusRequest> heard;
  (void)bus_.Subscribe(kSubject, [&heard](const std::string&, const std::string&, const std::string& data) {
    v1::BusRequest req;
    ASSERT_TRUE(req.ParseFromString(data));
    heard.push_back(req);
  });
  live_ = {"gw-a"};
  (void)CallAndWait(absl::Milliseconds(300), Terminate());
  (void)CallAndWait(absl::Milliseconds(300));
  ASSERT_EQ(heard.size(), 2u);
  EXPECT_GT(heard[0].remember_ms(), 1000u);
  EXPECT_LE(heard[0].remember_ms(), 1300u);
  EXPECT_EQ(heard[1].remember_ms(), 0u);
}

// Answers the way a gateway of another bus format version does.
void AnswerWithError(InMemoryBus* bus, const std::string& id, const std::string& reply, const std::string& data) {
  v1::BusRequest req;
  ASSERT_TRUE(req.ParseFromString(data));
  v1::BusReply r;
  r.set_format_version(2);
  r.set_request_id(req.request_id());
  r.set_gateway_id(id);
  r.set_error("unsupported format_version 1");
  (void)bus->Publish(reply, r.SerializeAsString(), "");
}

TEST_F(ScatterGatherTest, AnErrorAnswerIsAGatewayThatDidNotAct) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kAnswer);
  (void)bus_.Subscribe(kSubject, [this](const std::string&, const std::string& reply, const std::string& data) {
    AnswerWithError(&bus_, "gw-old", reply, data);
  });
  live_ = {"gw-a", "gw-old"};
  const absl::Time start = absl::Now();
  auto r = CallAndWait(absl::Seconds(30));
  ASSERT_TRUE(r.ok());
  // Not waited for beyond its answer, but not complete either: named, with why.
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_FALSE(r->complete);
  EXPECT_EQ(r->missing, (std::vector<std::string>{"gw-old"}));
  EXPECT_EQ(r->answers.count("gw-old"), 0u);
  EXPECT_EQ(r->answers.count("gw-a"), 1u);
  EXPECT_NE(r->missing_reasons.at("gw-old").find("unsupported format_version 1"), std::string::npos);
  EXPECT_NE(r->incomplete_reason.find("gw-old"), std::string::npos);
}

TEST_F(ScatterGatherTest, AnErrorAnswerFromAnUnaskedGatewayMakesTheAnswerIncomplete) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kHold);
  (void)bus_.Subscribe(kSubject, [this](const std::string&, const std::string& reply, const std::string& data) {
    AnswerWithError(&bus_, "gw-new", reply, data);
  });
  live_ = {"gw-a"};
  auto promise = std::make_shared<std::promise<absl::StatusOr<GatherResult>>>();
  auto future = promise->get_future();
  sg_->Call(Terminate(), absl::Now() + absl::Seconds(30),
            [promise](absl::StatusOr<GatherResult> r) { promise->set_value(std::move(r)); });
  a.ReleaseHeld();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto r = future.get();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->complete);
  EXPECT_EQ(r->missing, (std::vector<std::string>{"gw-new"}));
}

TEST_F(ScatterGatherTest, OnlyAuthenticatedAnswersCountAndAForgedOneIsNotTheGatewaysAnswer) {
  // gw-a's real answers carry "closed 1"; a forger answers first as gw-a
  // with "closed 0" and a wrong MAC, and as gw-b (which never answers).
  ScatterGather sg(&bus_, &timers_, [] { return std::vector<std::string>{"gw-a", "gw-b"}; }, kSubject, nullptr,
                   [](const std::string& gw, std::string_view body, std::string_view mac) {
                     return gw == "gw-a" && AnswerMacValid("key-a", body, mac);
                   });
  ASSERT_TRUE(sg.Start().ok());
  (void)bus_.Subscribe(kSubject, [this](const std::string&, const std::string& reply, const std::string& data) {
    v1::BusRequest req;
    ASSERT_TRUE(req.ParseFromString(data));
    for (auto [id, closed, key] : {std::tuple<const char*, uint32_t, const char*>{"gw-a", 0, "guess"},
                                   {"gw-b", 0, ""},
                                   {"gw-a", 1, "key-a"}}) {
      v1::BusReply r;
      r.set_format_version(1);
      r.set_request_id(req.request_id());
      r.set_gateway_id(id);
      r.set_closed(closed);
      std::string bytes = r.SerializeAsString();
      if (*key) bytes = SignAnswer(key, std::move(bytes));
      (void)bus_.Publish(reply, bytes, "");
    }
  });
  auto promise = std::make_shared<std::promise<absl::StatusOr<GatherResult>>>();
  auto future = promise->get_future();
  sg.Call(Terminate(), absl::Now() + absl::Milliseconds(200),
          [promise](absl::StatusOr<GatherResult> r) { promise->set_value(std::move(r)); });
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto r = future.get();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->complete);
  ASSERT_EQ(r->answers.size(), 1u);
  EXPECT_EQ(r->answers.at("gw-a").closed(), 1u);
  EXPECT_EQ(r->missing, (std::vector<std::string>{"gw-b"}));
  EXPECT_NE(r->missing_reasons.at("gw-b").find("authenticated"), std::string::npos);
  EXPECT_EQ(sg.unauthenticated(), 2u);
}

TEST_F(ScatterGatherTest, AGatewayThatLeavesTheFleetIsNotWaitedFor) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kAnswer);
  FakeGateway gone(&bus_, "gw-gone", FakeGateway::Mode::kSilent);
  live_ = {"gw-a", "gw-gone"};
  auto promise = std::make_shared<std::promise<absl::StatusOr<GatherResult>>>();
  auto future = promise->get_future();
  const absl::Time start = absl::Now();
  sg_->Call(v1::BusRequest(), absl::Now() + absl::Seconds(30),
            [promise](absl::StatusOr<GatherResult> r) { promise->set_value(std::move(r)); });
  EXPECT_EQ(future.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  sg_->MemberLeft("gw-unrelated");
  EXPECT_EQ(sg_->in_flight(), 1u);
  sg_->MemberLeft("gw-gone");
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  auto r = future.get();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->complete);
  EXPECT_EQ(r->missing, (std::vector<std::string>{"gw-gone"}));
  EXPECT_EQ(r->missing_reasons.at("gw-gone"), "left the fleet during the call");
}

TEST_F(ScatterGatherTest, AGatewayBackOnTheBusIsAskedAgainWhatItMissed) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kAnswer);
  FakeGateway back(&bus_, "gw-back", FakeGateway::Mode::kSilent);  // off the bus: the request is lost
  live_ = {"gw-a", "gw-back"};
  auto promise = std::make_shared<std::promise<absl::StatusOr<GatherResult>>>();
  auto future = promise->get_future();
  sg_->Call(Terminate(), absl::Now() + absl::Seconds(30),
            [promise](absl::StatusOr<GatherResult> r) { promise->set_value(std::move(r)); });
  EXPECT_EQ(future.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  EXPECT_EQ(back.requests(), 1);
  sg_->Reask("gw-a");        // answered already: nothing goes out again
  sg_->Reask("gw-unasked");  // not awaited by any call
  EXPECT_EQ(sg_->reasked(), 0u);
  EXPECT_EQ(back.requests(), 1);
  back.set_mode(FakeGateway::Mode::kAnswer);  // back on the bus
  sg_->Reask("gw-back");
  ASSERT_EQ(future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  auto r = future.get();
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->complete);
  EXPECT_EQ(r->answers.size(), 2u);
  EXPECT_EQ(back.requests(), 2);
  EXPECT_EQ(a.requests(), 2);  // the same request, heard again by everyone (gateways run a command once)
  EXPECT_EQ(sg_->reasked(), 1u);
  sg_->Reask("gw-back");  // nothing pending any more
  EXPECT_EQ(sg_->reasked(), 1u);
}

TEST_F(ScatterGatherTest, AnswerLargerThanTheBusArrivesInPartsAndIsMerged) {
  v1::BusReply big;
  big.set_format_version(1);
  big.set_gateway_id("gw-a");
  for (int i = 0; i < 3000; ++i) {
    auto* r = big.add_sessions();
    r->set_client_id("client-" + std::to_string(i));
    r->set_user_id("42");
    r->set_meta_json(std::string(1000, 'm'));
  }
  (void)bus_.Subscribe(kSubject, [this, big](const std::string&, const std::string& reply, const std::string& data) {
    v1::BusRequest req;
    ASSERT_TRUE(req.ParseFromString(data));
    v1::BusReply answer = big;
    answer.set_request_id(req.request_id());
    auto parts = gateway::SplitReply(answer, 1 << 20);
    ASSERT_GE(parts.size(), 3u);
    for (const auto& p : parts) EXPECT_LE(p.ByteSizeLong(), size_t{1} << 20);
    // Out of order, with a part repeated: still one whole answer.
    std::swap(parts.front(), parts.back());
    parts.push_back(parts[1]);
    for (const auto& p : parts) (void)bus_.Publish(reply, p.SerializeAsString(), "");
  });
  live_ = {"gw-a"};
  auto r = CallAndWait(absl::Seconds(30));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->complete);
  ASSERT_EQ(r->answers.count("gw-a"), 1u);
  EXPECT_EQ(r->answers.at("gw-a").sessions_size(), 3000);
}

TEST_F(ScatterGatherTest, RequestLargerThanTheBusIsInvalidArgument) {
  live_ = {"gw-a"};
  v1::BusRequest req = Terminate();
  for (int i = 0; i < 5000; ++i) req.mutable_terminate()->add_except_client_ids(std::string(250, 'x'));
  auto r = CallAndWait(absl::Seconds(1), req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bus_.published(), 0);
}

TEST_F(ScatterGatherTest, TheBusKnowsHowManyCallsAwaitAnswers) {
  FakeGateway a(&bus_, "gw-a", FakeGateway::Mode::kAnswer);
  FakeGateway slow(&bus_, "gw-slow", FakeGateway::Mode::kHold);
  live_ = {"gw-a", "gw-slow"};
  std::atomic<int> done{0};
  sg_->Call(Terminate(), absl::Now() + absl::Seconds(30), [&](absl::StatusOr<GatherResult>) { ++done; });
  EXPECT_EQ(bus_.awaiting(), 1);  // gw-a answered, gw-slow not yet
  slow.ReleaseHeld();
  EXPECT_EQ(done.load(), 1);
  EXPECT_EQ(bus_.awaiting(), 0);
}

TEST_F(ScatterGatherTest, CallsInFlightAreBounded) {
  FakeGateway slow(&bus_, "gw-slow", FakeGateway::Mode::kHold);
  live_ = {"gw-slow"};
  sg_->set_max_in_flight(2);
  std::vector<absl::StatusOr<GatherResult>> results;
  absl::Mutex mu;
  for (int i = 0; i < 3; ++i) {
    sg_->Call(Terminate(), absl::Now() + absl::Seconds(30), [&](absl::StatusOr<GatherResult> r) {
      absl::MutexLock lock(&mu);
      results.push_back(std::move(r));
    });
  }
  {
    absl::MutexLock lock(&mu);
    ASSERT_EQ(results.size(), 1u);  // the third, at once
    EXPECT_EQ(results[0].status().code(), absl::StatusCode::kResourceExhausted);
  }
  slow.ReleaseHeld();
  absl::MutexLock lock(&mu);
  EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(
                                      +[](std::vector<absl::StatusOr<GatherResult>>* v) { return v->size() == 3; },
                                      &results),
                                  absl::Seconds(10)));
}

TEST_F(ScatterGatherTest, CloseEndsCallsInFlightAndRefusesLaterOnes) {
  FakeGateway slow(&bus_, "gw-slow", FakeGateway::Mode::kHold);
  live_ = {"gw-slow"};
  std::vector<absl::StatusOr<GatherResult>> results;
  absl::Mutex mu;
  auto record = [&](absl::StatusOr<GatherResult> r) {
    absl::MutexLock lock(&mu);
    results.push_back(std::move(r));
  };
  for (int i = 0; i < 2; ++i) sg_->Call(Terminate(), absl::Now() + absl::Seconds(30), record);
  {
    absl::MutexLock lock(&mu);
    ASSERT_TRUE(results.empty());  // held by the gateway
  }
  EXPECT_EQ(bus_.awaiting(), 2);  // the bus knows two calls wait for answers
  sg_->Close(absl::UnavailableError("stopping"));
  {
    absl::MutexLock lock(&mu);  // Close returns only after every done has run
    ASSERT_EQ(results.size(), 2u);
    for (const auto& r : results) EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_EQ(sg_->in_flight(), 0u);
  EXPECT_EQ(bus_.awaiting(), 0);
  sg_->Call(Terminate(), absl::Now() + absl::Seconds(30), record);
  {
    absl::MutexLock lock(&mu);
    ASSERT_EQ(results.size(), 3u);  // at once
    EXPECT_EQ(results[2].status().code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(results[2].status().message(), "stopping");
  }
  slow.ReleaseHeld();  // the held answers arrive after the calls ended: dropped, no second callback
  absl::MutexLock lock(&mu);
  EXPECT_EQ(results.size(), 3u);
}

}  // namespace
}  // namespace switchboard::control
