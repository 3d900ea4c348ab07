#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace switchboard::gateway {

// Turns a configured control address ("host:port") into the address of every
// replica behind it: all A/AAAA records of the host (a Kubernetes headless
// Service lists one per replica), as "ip:port" ("[ip]:port" for IPv6),
// sorted. A literal IP resolves to itself. Uses c-ares with the system's
// resolver configuration, or against `dns_server` ("ip:port") when given.
// Blocking (bounded by the timeout): call it off the event loop. One thread
// at a time.
class ControlResolver {
 public:
  static absl::StatusOr<std::unique_ptr<ControlResolver>> Create(const std::string& dns_server);
  ~ControlResolver();
  absl::StatusOr<std::vector<std::string>> Resolve(const std::string& host_port, absl::Duration timeout);

 private:
  ControlResolver() = default;
  struct Channel;
  std::unique_ptr<Channel> channel_;
};

}  // namespace switchboard::gateway
