#pragma once

#include <cstddef>
#include <optional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace switchboard::gateway {

// Time as the drain sees it: the real clock in the gateway, a fake one in
// unit tests (which then run a 2-second drain in no time).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
  // Waits this long (pacing, never synchronisation).
  virtual void SleepFor(absl::Duration d) = 0;
};

class RealClock final : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
  void SleepFor(absl::Duration d) override { absl::SleepFor(d); }
};

// What a drain acts on: the gateway's parts, each step run on the event loop
// by the gateway (GatewayApp), a recording fake in unit tests. A step whose
// answer is nullopt/false did not get one in time (the loop is stuck): the
// drain goes on to the next step, so it always ends.
class DrainTarget {
 public:
  virtual ~DrainTarget() = default;
  // Unready at once (GET /readyz 503 "draining"), still serving and accepting.
  virtual void BeginDrain() = 0;
  // New connections refused and the listener closed; connections open now.
  virtual std::optional<size_t> StopAccepting() = 0;
  // Closes up to `n` more clients with the reconnect code; open after.
  virtual std::optional<size_t> CloseSome(size_t n) = 0;
  // Closes everyone left and waits, at most `timeout`, until every close
  // handshake has ended; false if some are still open.
  virtual bool CloseRestAndWait(absl::Duration timeout) = 0;
  // Leaves the fleet: the presence announcements, then every control link.
  virtual void LeaveFleet() = 0;
  // Connections left at the end (for the log), then ends the event loop.
  virtual std::optional<size_t> EndLoop() = 0;
};

// How a gateway drains on SIGTERM.
struct DrainPlan {
  // Serving on (accepting too) while already unready, so load balancers take
  // the gateway out before it refuses anyone.
  absl::Duration delay = absl::ZeroDuration();
  // Clients are closed in slices spread over most (80%) of this window, so
  // they do not all reconnect to the rest of the fleet at the same instant.
  absl::Duration window = absl::Seconds(2);
  absl::Duration tick = absl::Milliseconds(50);
  // Bound on the close handshakes of whoever is left at the end of the window
  // (lws gives a silent peer a few seconds).
  absl::Duration close_deadline = absl::Seconds(10);
};

struct DrainReport {
  size_t connections_at_start = 0;  // when accepting stopped
  size_t slices = 0;                // CloseSome calls
  size_t per_slice = 0;
  bool closed_in_time = true;       // every close handshake ended by close_deadline
  std::optional<size_t> left;       // connections still open at the end
};

// Runs a drain from start to end: unready, (delay), stop accepting, closes in
// slices until the window ends or nobody is left, closes the rest, leaves the
// fleet, ends the loop. Blocks the calling thread (the signal thread).
DrainReport RunDrain(DrainTarget& target, Clock& clock, const DrainPlan& plan);

}  // namespace switchboard::gateway
