#include "gateway/answer_keys.h"

#include <algorithm>
#include <utility>

#include "common/answer_mac.h"

namespace switchboard::gateway {

std::vector<std::string> AnswerKeys::Set(const std::string& reply_subject, const std::string& key, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (keys_.size() >= kMaxReplicas && !keys_.contains(reply_subject)) keys_.clear();  // bounded; links re-welcome
  keys_[reply_subject] = key;
  ExpireLocked(now);
  std::vector<std::string> ready;
  auto keep = held_.begin();
  for (auto& h : held_) {
    if (h.reply_subject == reply_subject) {
      held_bytes_ -= h.data.size();
      ready.push_back(SignAnswer(key, std::move(h.data)));
    } else {
      *keep++ = std::move(h);
    }
  }
  held_.erase(keep, held_.end());
  return ready;
}

bool AnswerKeys::Sign(const std::string& reply_subject, std::string* data, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (auto it = keys_.find(reply_subject); it != keys_.end()) {
    *data = SignAnswer(it->second, std::move(*data));
    return true;
  }
  if (!signing_) return false;
  ExpireLocked(now);
  if (held_bytes_ + data->size() > kMaxHeldBytes) return false;
  held_bytes_ += data->size();
  held_.push_back(Held{reply_subject, *data, now + kHoldFor});
  ++held_total_;
  return false;
}

void AnswerKeys::ExpireLocked(absl::Time now) {
  // Held in the order made, each for the same time: the expired ones lead.
  auto first_live = std::find_if(held_.begin(), held_.end(), [now](const Held& h) { return h.until > now; });
  for (auto it = held_.begin(); it != first_live; ++it) held_bytes_ -= it->data.size();
  held_.erase(held_.begin(), first_live);
}

}  // namespace switchboard::gateway
