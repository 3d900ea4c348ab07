#include "gateway/drain.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

class FakeClock final : public Clock {
 public:
  absl::Time Now() override { return now; }
  void SleepFor(absl::Duration d) override { now += d; }
  absl::Time now = kT0;
};

// A gateway with `open` clients, each step written down with the fake time
// it happened at. Clients may also leave on their own (`leave_per_slice`).
class FakeGateway final : public DrainTarget {
 public:
  explicit FakeGateway(FakeClock* clock, size_t open) : open(open), clock_(clock) {}
  struct Step {
    std::string what;
    absl::Duration at;
    size_t n = 0;
  };
  void BeginDrain() override { Log("unready"); }
  std::optional<size_t> StopAccepting() override {
    Log("stop accepting");
    if (loop_stuck) return std::nullopt;
    return open;
  }
  std::optional<size_t> CloseSome(size_t n) override {
    Log("close", n);
    if (loop_stuck) return std::nullopt;
    if (stubborn) return open;  // closes sent, nobody gone yet
    closed_by_slices += std::min(n, open);
    open -= std::min(n, open);
    open -= std::min(leave_per_slice, open);
    return open;
  }
  bool CloseRestAndWait(absl::Duration timeout) override {
    Log("close rest", open);
    if (loop_stuck) {
      clock_->SleepFor(timeout);
      return false;
    }
    open = 0;
    return true;
  }
  void LeaveFleet() override { Log("leave fleet"); }
  std::optional<size_t> EndLoop() override {
    Log("end loop");
    if (loop_stuck) return std::nullopt;
    return open;
  }

  std::vector<std::string> Order() const {
    std::vector<std::string> out;
    for (const Step& s : steps) {
      if (out.empty() || out.back() != s.what) out.push_back(s.what);
    }
    return out;
  }
  std::vector<Step> steps;
  size_t open;
  size_t closed_by_slices = 0;
  size_t leave_per_slice = 0;
  bool loop_stuck = false;
  bool stubborn = false;

 private:
  void Log(const std::string& what, size_t n = 0) { steps.push_back({what, clock_->now - kT0, n}); }
  FakeClock* clock_;
};

TEST(Drain, UnreadyFirstThenServesThroughTheDelayThenClosesInSlicesThenLeaves) {
  FakeClock clock;
  FakeGateway gw(&clock, 1000);
  DrainPlan plan;
  plan.delay = absl::Seconds(5);
  plan.window = absl::Seconds(2);
  DrainReport r = RunDrain(gw, clock, plan);
  EXPECT_EQ(gw.Order(), (std::vector<std::string>{"unready", "stop accepting", "close", "close rest", "leave fleet",
                                                  "end loop"}));
  EXPECT_EQ(gw.steps[0].at, absl::ZeroDuration());  // unready at once
  EXPECT_EQ(gw.steps[1].at, absl::Seconds(5));      // accepting until the delay is over
  // 80% of 2 s in 50 ms ticks: 32 slices of ceil(1000/32) = 32.
  EXPECT_EQ(r.connections_at_start, 1000u);
  EXPECT_EQ(r.per_slice, 32u);
  EXPECT_EQ(r.slices, 32u);
  EXPECT_EQ(gw.closed_by_slices, 1000u);  // all gone in slices, none left for the last step
  // Spread: the first slice at the start of the window, the last within 80% of it.
  std::vector<absl::Duration> closes;
  for (const auto& s : gw.steps) {
    if (s.what == "close") closes.push_back(s.at - absl::Seconds(5));
  }
  EXPECT_EQ(closes.front(), absl::ZeroDuration());
  EXPECT_LE(closes.back(), absl::Milliseconds(1600));
  for (size_t i = 1; i < closes.size(); ++i) EXPECT_EQ(closes[i] - closes[i - 1], absl::Milliseconds(50));
  EXPECT_TRUE(r.closed_in_time);
  ASSERT_TRUE(r.left.has_value());
  EXPECT_EQ(*r.left, 0u);
}

TEST(Drain, StopsSlicingWhenClientsLeaveOnTheirOwn) {
  FakeClock clock;
  FakeGateway gw(&clock, 100);
  gw.leave_per_slice = 40;  // clients reconnecting elsewhere by themselves
  DrainReport r = RunDrain(gw, clock, DrainPlan{});
  EXPECT_EQ(r.per_slice, 4u);  // ceil(100 / 32)
  // 100 → 56 → 12 → 0: three slices, and no idle wait for the rest of the window.
  EXPECT_EQ(r.slices, 3u);
  EXPECT_LE(clock.now - kT0, absl::Milliseconds(100));
}

TEST(Drain, NeverOutlivesItsWindowWhenClientsStay) {
  FakeClock clock;
  FakeGateway gw(&clock, 100000);
  gw.stubborn = true;
  DrainPlan plan;
  plan.window = absl::Seconds(1);
  DrainReport r = RunDrain(gw, clock, plan);
  // Slices of ceil(100000 / 16) until the window is over (the slices only
  // send closes: nobody has gone yet); then whoever is left is closed at once.
  EXPECT_EQ(r.per_slice, 6250u);
  EXPECT_EQ(r.slices, 20u);
  EXPECT_LE(clock.now - kT0, absl::Seconds(1));
  const auto& rest = gw.steps[gw.steps.size() - 3];
  ASSERT_EQ(rest.what, "close rest");
  EXPECT_LE(rest.at, absl::Seconds(1));
}

TEST(Drain, AnEmptyGatewayGoesStraightToLeaving) {
  FakeClock clock;
  FakeGateway gw(&clock, 0);
  DrainReport r = RunDrain(gw, clock, DrainPlan{});
  EXPECT_EQ(r.slices, 0u);
  EXPECT_EQ(gw.Order(), (std::vector<std::string>{"unready", "stop accepting", "close rest", "leave fleet",
                                                  "end loop"}));
  EXPECT_EQ(clock.now, kT0);
}

TEST(Drain, AStuckLoopStillEndsBoundedAndLeavesTheFleet) {
  FakeClock clock;
  FakeGateway gw(&clock, 500);
  gw.loop_stuck = true;
  DrainPlan plan;
  plan.close_deadline = absl::Seconds(10);
  DrainReport r = RunDrain(gw, clock, plan);
  EXPECT_EQ(r.connections_at_start, 0u);  // no answer: nothing known
  EXPECT_FALSE(r.closed_in_time);
  EXPECT_FALSE(r.left.has_value());
  EXPECT_EQ(gw.Order().back(), "end loop");
  EXPECT_EQ(gw.Order()[gw.Order().size() - 2], "leave fleet");
  EXPECT_LE(clock.now - kT0, absl::Seconds(10));
}

}  // namespace
}  // namespace switchboard::gateway
