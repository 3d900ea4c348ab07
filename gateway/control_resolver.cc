#include "gateway/control_resolver.h"

#include <arpa/inet.h>
#include <ares.h>
#include <netdb.h>
#include <poll.h>

#include <algorithm>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace switchboard::gateway {

struct ControlResolver::Channel {
  ares_channel ch = nullptr;
};

namespace {

struct Lookup {
  bool done = false;
  int status = ARES_SUCCESS;
  std::vector<std::string> ips;
};

void OnAddrInfo(void* arg, int status, int, ares_addrinfo* result) {
  auto* lookup = static_cast<Lookup*>(arg);
  lookup->done = true;
  lookup->status = status;
  if (result == nullptr) return;
  for (ares_addrinfo_node* n = result->nodes; n != nullptr; n = n->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {0};
    if (n->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(n->ai_addr)->sin_addr, buf, sizeof(buf));
      lookup->ips.emplace_back(buf);
    } else if (n->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(n->ai_addr)->sin6_addr, buf, sizeof(buf));
      lookup->ips.push_back(absl::StrCat("[", buf, "]"));
    }
  }
  ares_freeaddrinfo(result);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControlResolver>> ControlResolver::Create(const std::string& dns_server) {
  static std::once_flag init;
  static int init_status = ARES_SUCCESS;
  std::call_once(init, [] { init_status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (init_status != ARES_SUCCESS) return absl::InternalError("c-ares: library init failed");
  std::unique_ptr<ControlResolver> r(new ControlResolver());
  r->channel_ = std::make_unique<Channel>();
  if (ares_init(&r->channel_->ch) != ARES_SUCCESS) return absl::InternalError("c-ares: cannot create a channel");
  if (!dns_server.empty() && ares_set_servers_ports_csv(r->channel_->ch, dns_server.c_str()) != ARES_SUCCESS) {
    return absl::InvalidArgumentError("control.dns_server \"" + dns_server + "\" is not ip:port");
  }
  return r;
}

ControlResolver::~ControlResolver() {
  if (channel_ && channel_->ch) ares_destroy(channel_->ch);
}

absl::StatusOr<std::vector<std::string>> ControlResolver::Resolve(const std::string& host_port,
                                                                  absl::Duration timeout) {
  const size_t colon = host_port.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(host_port.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError("\"" + host_port + "\" is not host:port");
  }
  std::string host = host_port.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);

  Lookup lookup;
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  ares_getaddrinfo(channel_->ch, host.c_str(), nullptr, &hints, OnAddrInfo, &lookup);
  // poll(), not select(): a gateway's descriptors go far past FD_SETSIZE.
  const absl::Time deadline = absl::Now() + timeout;
  while (!lookup.done) {
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    const int mask = ares_getsock(channel_->ch, socks, ARES_GETSOCK_MAXNUM);
    std::vector<pollfd> fds;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      short events = 0;
      if (ARES_GETSOCK_READABLE(mask, i)) events |= POLLIN;
      if (ARES_GETSOCK_WRITABLE(mask, i)) events |= POLLOUT;
      if (events) fds.push_back({socks[i], events, 0});
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      ares_cancel(channel_->ch);  // runs the callback with ARES_ECANCELLED
      break;
    }
    timeval max_tv = absl::ToTimeval(std::min(left, absl::Milliseconds(200)));
    timeval tv;
    timeval* wait = ares_timeout(channel_->ch, &max_tv, &tv);
    const int ms = static_cast<int>(wait->tv_sec * 1000 + wait->tv_usec / 1000);
    const int n = poll(fds.data(), fds.size(), ms);
    if (n <= 0) {
      ares_process_fd(channel_->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // timeouts
      continue;
    }
    for (const auto& p : fds) {
      ares_process_fd(channel_->ch, (p.revents & (POLLIN | POLLERR | POLLHUP)) ? p.fd : ARES_SOCKET_BAD,
                      (p.revents & POLLOUT) ? p.fd : ARES_SOCKET_BAD);
    }
  }
  if (!lookup.done || lookup.status != ARES_SUCCESS) {
    return absl::UnavailableError(absl::StrCat("resolving ", host, ": ",
                                               lookup.done ? ares_strerror(lookup.status) : "timed out"));
  }
  std::vector<std::string> out;
  for (auto& ip : lookup.ips) out.push_back(absl::StrCat(ip, ":", port));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  if (out.empty()) return absl::UnavailableError("resolving " + host + ": no addresses");
  return out;
}

}  // namespace switchboard::gateway
