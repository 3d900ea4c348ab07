#pragma once

#include <cstddef>
#include <string>

namespace switchboard::gateway {

// What a gateway's /readyz answers: can it serve clients? (deploy/README.md,
// Probes.) On the bus, attached to at least one control replica (a replica
// it cannot reach names it as missing in its own answers, and one bad
// replica must not take every gateway out of the load balancer), not
// draining, and not near capacity, with hysteresis so it does not flap at the
// mark. Plain state, no I/O: the caller gathers the facts (on the loop).
class Readiness {
 public:
  // Unready from unready_at_percent of max_sessions, ready again below
  // ready_again_at_percent.
  Readiness(size_t max_sessions, unsigned unready_at_percent, unsigned ready_again_at_percent);

  struct Facts {
    bool nats_connected = false;
    std::string not_attached;  // why no control replica is attached ("" when one is)
    bool draining = false;
    size_t sessions = 0;
  };
  // "" when ready, otherwise why not. Remembers whether it was full.
  std::string Check(const Facts& facts);

  size_t unready_at() const { return unready_at_; }
  size_t ready_again_at() const { return ready_again_at_; }

 private:
  size_t unready_at_;
  size_t ready_again_at_;
  bool full_ = false;
};

}  // namespace switchboard::gateway
