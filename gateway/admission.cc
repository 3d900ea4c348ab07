#include "gateway/admission.h"

#include <algorithm>
#include <utility>

namespace switchboard::gateway {

Admission::Admission(const Options& options) : options_(options) {
  if (options_.max_sockets == 0) options_.max_sockets = options_.max_sessions + 256;
}

Admission::Accepted Admission::Accept(std::string ip, bool proxied) {
  Accepted out;
  if (open_sockets_ >= options_.max_sockets) {
    out.shed = Count(Reason::kSocketCap, "the gateway's socket cap");
    return out;
  }
  auto entry = per_ip_.try_emplace(std::move(ip), 0).first;
  // Up to the per-address cap, sockets are served; up to twice that, a
  // request is answered 503 (a client that can read it backs off); beyond,
  // the socket is closed at once.
  if (!proxied && options_.max_per_ip > 0 && entry->second >= 2 * options_.max_per_ip) {
    out.shed = Count(Reason::kSocketsPerAddress, "too many sockets from one address");
    return out;  // entry->second > 0: the entry stays
  }
  ++entry->second;
  ++open_sockets_;
  out.key = &entry->first;
  return out;
}

Admission::Key Admission::Rekey(Key key, std::string client) {
  if (key != nullptr && client == *key) return key;
  if (key != nullptr) {
    Uncount(key);
  } else {
    ++open_sockets_;
  }
  auto entry = per_ip_.try_emplace(std::move(client), 0).first;
  ++entry->second;
  return &entry->first;
}

void Admission::Release(Key key) {
  if (key == nullptr) return;
  --open_sockets_;
  Uncount(key);
}

void Admission::Uncount(Key key) {
  auto it = per_ip_.find(*key);
  if (it != per_ip_.end() && --it->second == 0) per_ip_.erase(it);
}

uint32_t Admission::SocketsFrom(const std::string& ip) const {
  auto it = per_ip_.find(ip);
  return it == per_ip_.end() ? 0 : it->second;
}

const char* Admission::Refusal(const std::string& ip, size_t sessions, absl::Time now) {
  if (stopping_) return Count(Reason::kDraining, "draining");
  if (sessions >= options_.max_sessions) return Count(Reason::kFull, "gateway full");
  // per_ip_ counts this address's open sockets, this one included.
  if (options_.max_per_ip > 0 && SocketsFrom(ip) > options_.max_per_ip) {
    return Count(Reason::kPerAddress, "too many connections from this address");
  }
  if (options_.rate_per_ip > 0) {
    // Per address: a flooding address uses up its own bucket, not everyone's.
    if (rate_by_ip_.size() >= kMaxRateBuckets) {
      absl::erase_if(rate_by_ip_, [now](const auto& kv) { return now - kv.second.refilled >= absl::Seconds(1); });
    }
    if (!rate_by_ip_[ip].Take(options_.rate_per_ip, now)) {
      return Count(Reason::kRatePerAddress, "too many new connections from this address");
    }
  }
  if (options_.rate_total > 0 && !rate_total_.Take(options_.rate_total, now)) {
    return Count(Reason::kRateTotal, "too many new connections");
  }
  return nullptr;
}

const char* Admission::Label(Reason reason) {
  switch (reason) {
    case Reason::kDraining: return "draining";
    case Reason::kFull: return "full";
    case Reason::kPerAddress: return "per_address";
    case Reason::kRatePerAddress: return "rate_per_address";
    case Reason::kRateTotal: return "rate_total";
    case Reason::kSocketCap: return "socket_cap";
    case Reason::kSocketsPerAddress: return "sockets_per_address";
    case Reason::kOutOfDescriptors: return "out_of_descriptors";
    case Reason::kCount: break;
  }
  return "unknown";
}

bool Admission::Bucket::Take(double rate, absl::Time now) {
  tokens = refilled == absl::InfinitePast() ? rate
                                            : std::min(rate, tokens + absl::ToDoubleSeconds(now - refilled) * rate);
  refilled = now;
  if (tokens < 1) return false;
  tokens -= 1;
  return true;
}

}  // namespace switchboard::gateway
