#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/time/time.h"

namespace switchboard::gateway {

// Who gets in: the gateway's admission policy, with no socket in sight (the
// WebSocket server asks it; unit tests drive it with their own clock).
//
// It counts the sockets open per client address, from accept to close: a
// socket is counted for the address it was accepted from, and re-keyed to
// its client once a trusted proxy names it (PROXY header, X-Forwarded-For).
// Two answers come out of it:
//  - at accept: close the socket at once (shed), when the process's socket
//    cap is reached or one address holds twice its per-address cap (holding
//    such sockets would cost us, not them);
//  - at a request (a WebSocket upgrade, a uni stream): refuse it with an
//    HTTP 503 and a reason the client can act on (draining, full, too many
//    from this address, too many new connections), taking a rate token.
// Loop thread only; no locks.
class Admission {
 public:
  struct Options {
    size_t max_sessions = 18000;  // sessions, beyond which requests are refused
    size_t max_sockets = 0;       // open sockets at once; 0: max_sessions + 256
    size_t max_per_ip = 0;        // sockets from one address; 0: no cap
    // New connections per second from one address, and from all together
    // (the ceiling); 0: no limit.
    double rate_per_ip = 0;
    double rate_total = 0;
  };
  explicit Admission(const Options& options);

  // Why a socket was shed or a request refused: the metrics' `reason` label.
  enum class Reason : uint8_t {
    kDraining,           // refused: the gateway drains
    kFull,               // refused: max_sessions
    kPerAddress,         // refused: max_connections_per_ip
    kRatePerAddress,     // refused: connection_rate_limit
    kRateTotal,          // refused: connection_rate_limit_total
    kSocketCap,          // shed: the process's socket cap
    kSocketsPerAddress,  // shed: twice max_connections_per_ip
    kOutOfDescriptors,   // shed: accept() hit the descriptor limit (NoteOutOfDescriptors)
    kCount
  };
  static const char* Label(Reason reason);
  // How many times, since start.
  uint64_t count(Reason reason) const { return counts_[static_cast<size_t>(reason)]; }
  void NoteOutOfDescriptors() { ++counts_[static_cast<size_t>(Reason::kOutOfDescriptors)]; }

  // A counted socket's address, stable while the socket is counted (the map
  // is node-based): what the caller keeps beside the socket.
  using Key = const std::string*;

  struct Accepted {
    Key key = nullptr;           // counted under this, when admitted
    const char* shed = nullptr;  // otherwise why it is closed at once
  };
  // A socket accepted from `ip`. A trusted proxy's socket (`proxied`)
  // carries many clients: the per-address caps wait for Rekey.
  Accepted Accept(std::string ip, bool proxied);
  // The socket counted under `key` belongs to `client` from now on (its
  // proxy named it). A null key: a socket not counted yet is counted now.
  Key Rekey(Key key, std::string client);
  // The socket is gone (null: it was never counted).
  void Release(Key key);

  // Why a request from `ip` (a counted key's address) is refused, or
  // nullptr. `sessions`: open now. Takes a rate token when admitted.
  const char* Refusal(const std::string& ip, size_t sessions, absl::Time now);
  // Every request from now on is refused ("draining").
  void StopAdmitting() { stopping_ = true; }

  size_t open_sockets() const { return open_sockets_; }
  size_t max_sockets() const { return options_.max_sockets; }
  // Sockets counted for `ip` now, and addresses with a socket open.
  uint32_t SocketsFrom(const std::string& ip) const;
  size_t addresses() const { return per_ip_.size(); }
  size_t rate_buckets() const { return rate_by_ip_.size(); }

  // At most this many addresses keep a rate bucket: beyond, the full ones
  // (idle for a second) are forgotten.
  static constexpr size_t kMaxRateBuckets = 4096;

 private:
  // A token bucket holding one second's worth.
  struct Bucket {
    double tokens = 0;
    absl::Time refilled = absl::InfinitePast();
    // Refills to `rate` and takes one token; false if none was left.
    bool Take(double rate, absl::Time now);
  };
  void Uncount(Key key);

  const char* Count(Reason reason, const char* why) {
    ++counts_[static_cast<size_t>(reason)];
    return why;
  }

  Options options_;
  std::array<uint64_t, static_cast<size_t>(Reason::kCount)> counts_{};
  absl::node_hash_map<std::string, uint32_t> per_ip_;
  size_t open_sockets_ = 0;
  absl::flat_hash_map<std::string, Bucket> rate_by_ip_;
  Bucket rate_total_;
  bool stopping_ = false;
};

}  // namespace switchboard::gateway
