#include "common/dispatcher.h"

#include <deque>
#include <memory>

#include "gtest/gtest.h"

namespace switchboard {
namespace {

// A loop that runs nothing until told: a stalled event loop.
class StalledLoop : public Dispatcher {
 public:
  bool Post(std::function<void()> fn) override {
    queue_.push_back(std::move(fn));
    return true;
  }
  void RunAll() {
    while (!queue_.empty()) {
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      fn();
    }
  }

 private:
  std::deque<std::function<void()>> queue_;
};

TEST(RunOnLoop, AClosureGivenUpOnNeverRunsWhatItCaptured) {
  StalledLoop loop;
  // What the closure touches goes away once the caller has given up (as a
  // control link freed when DNS drops its replica).
  auto owner = std::make_unique<int>(0);
  int* target = owner.get();
  int out = 0;
  EXPECT_FALSE(RunOnLoop(&loop, [target] { return ++*target; }, absl::Milliseconds(10), &out));
  owner.reset();
  loop.RunAll();  // under ASan, running it would be a use-after-free
  EXPECT_EQ(out, 0);
}

TEST(RunOnLoop, AnAnswerInTimeIsReturned) {
  class InlineLoop : public Dispatcher {
   public:
    bool Post(std::function<void()> fn) override {
      fn();
      return true;
    }
  } loop;
  int out = 0;
  EXPECT_TRUE(RunOnLoop(&loop, [] { return 42; }, absl::Seconds(1), &out));
  EXPECT_EQ(out, 42);
}

}  // namespace
}  // namespace switchboard
