#include "common/runtime.h"

#include "absl/synchronization/mutex.h"

namespace switchboard {

void TuneRuntime() {
#ifdef SWITCHBOARD_SANITIZE_BUILD
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kAbort);
#else
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
}

}  // namespace switchboard
