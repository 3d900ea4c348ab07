#include "gateway/readiness.h"

#include "absl/strings/str_cat.h"

namespace switchboard::gateway {

Readiness::Readiness(size_t max_sessions, unsigned unready_at_percent, unsigned ready_again_at_percent)
    : unready_at_(max_sessions * unready_at_percent / 100), ready_again_at_(max_sessions * ready_again_at_percent / 100) {}

std::string Readiness::Check(const Facts& facts) {
  if (facts.draining) return "draining";
  if (!facts.nats_connected) return "NATS disconnected";
  if (!facts.not_attached.empty()) return facts.not_attached;
  full_ = full_ ? facts.sessions >= ready_again_at_ : facts.sessions >= unready_at_;
  if (full_) {
    return absl::StrCat("near capacity: ", facts.sessions, " sessions (unready from ", unready_at_,
                        ", ready again below ", ready_again_at_, ")");
  }
  return "";
}

}  // namespace switchboard::gateway
