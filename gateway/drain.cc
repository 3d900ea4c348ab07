#include "gateway/drain.h"

#include <algorithm>

namespace switchboard::gateway {

DrainReport RunDrain(DrainTarget& target, Clock& clock, const DrainPlan& plan) {
  DrainReport report;
  target.BeginDrain();
  if (plan.delay > absl::ZeroDuration()) clock.SleepFor(plan.delay);

  const absl::Time deadline = clock.Now() + plan.window;
  const size_t total = target.StopAccepting().value_or(0);
  report.connections_at_start = total;
  const absl::Duration tick = std::max(plan.tick, absl::Milliseconds(1));
  const int64_t slices = std::max<int64_t>(1, (plan.window * 0.8) / tick);
  report.per_slice = std::max<size_t>(1, (total + static_cast<size_t>(slices) - 1) / static_cast<size_t>(slices));
  size_t open = total;
  while (open > 0 && clock.Now() < deadline) {
    const std::optional<size_t> now_open = target.CloseSome(report.per_slice);
    ++report.slices;
    if (!now_open.has_value() || *now_open == 0) break;
    open = *now_open;
    clock.SleepFor(tick);
  }
  report.closed_in_time = target.CloseRestAndWait(plan.close_deadline);
  target.LeaveFleet();
  report.left = target.EndLoop();
  return report;
}

}  // namespace switchboard::gateway
