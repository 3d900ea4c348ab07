#include "control/stall_guard.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace switchboard::control {

absl::Duration MonotonicNow() { return absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch()); }

StallGuard::StallGuard(absl::Duration lease, absl::Duration max_gap, absl::Time wall, absl::Duration mono)
    : lease_(lease), max_gap_(max_gap), last_wall_(wall), last_mono_(mono), fresh_since_(mono),
      fresh_why_("started") {}

std::string StallGuard::Gap(absl::Time wall, absl::Duration mono) const {
  const absl::Duration ran = mono - last_mono_;
  if (ran > max_gap_) {
    return absl::StrCat("did not run for ", absl::FormatDuration(ran), " (a stall)");
  }
  const absl::Duration skew = (wall - last_wall_) - ran;
  if (skew > max_gap_ || skew < -max_gap_) {
    return absl::StrCat("saw its wall clock jump by ", absl::FormatDuration(skew));
  }
  return "";
}

bool StallGuard::Tick(absl::Time wall, absl::Duration mono) {
  std::string why;
  {
    absl::MutexLock lock(&mu_);
    why = Gap(wall, mono);
    last_wall_ = wall;
    last_mono_ = mono;
    if (why.empty()) return false;
    fresh_since_ = mono;
    fresh_why_ = why;
  }
  spdlog::warn("this control replica {}: every lease renewed, answers incomplete for one lease", why);
  return true;
}

std::string StallGuard::NotReady(absl::Time wall, absl::Duration mono) const {
  absl::ReaderMutexLock lock(&mu_);
  // Not noticed by the sweeper yet: this thread ran first after the gap.
  if (std::string why = Gap(wall, mono); !why.empty()) {
    return absl::StrCat("this control replica ", why, "; gateways' leases cannot be trusted yet");
  }
  const absl::Duration since = mono - fresh_since_;
  if (since >= lease_) return "";
  if (fresh_why_ == "started") {
    return absl::StrCat("this control replica started ", absl::FormatDuration(since),
                        " ago; gateways may not have re-attached yet (lease ", absl::FormatDuration(lease_), ")");
  }
  return absl::StrCat("this control replica ", fresh_why_, " ", absl::FormatDuration(since),
                      " ago; gateways may not have renewed their leases yet (lease ", absl::FormatDuration(lease_),
                      ")");
}

}  // namespace switchboard::control
