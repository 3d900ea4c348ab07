#pragma once

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace switchboard::gateway {

// One gateway instance on several cores: the parent process starts `workers`
// copies of the gateway binary, each with its own event loop, descriptor
// budget, NATS connection and fleet membership (ID "<instance>-w<i>"), all
// listening on the same port with SO_REUSEPORT so the kernel spreads new
// connections over them. A worker that dies is started again (with backoff if
// it keeps dying); SIGTERM/SIGINT drain every worker and wait for them.
//
// Prints "READY gateway_id=<instance> port=<port> workers=<n>" on stdout once
// every worker is attached and listening.
//
// Runs on the main thread of a process that has started no other thread (it
// forks). Returns the process's exit status.
struct SupervisorOptions {
  std::string exe;                      // the gateway binary (/proc/self/exe)
  std::vector<std::string> args;        // the instance's own flags, passed on to each worker
  std::string instance_id;              // "" : hostname-port
  std::string host;                     // listen address
  int port = 0;                         // 0: chosen once, shared by every worker
  std::string operator_listen;          // "host:port": worker i gets port + i (port 0: its own)
  int workers = 2;
  absl::Duration drain = absl::Seconds(2);  // each worker's drain window
};

int RunSupervisor(const SupervisorOptions& options);

}  // namespace switchboard::gateway
