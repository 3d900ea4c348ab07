#include "gateway/supervisor.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace switchboard::gateway {
namespace {

constexpr int kReadyFd = 3;  // where a worker finds its readiness pipe

struct Worker {
  int index = 0;
  pid_t pid = -1;
  int ready_fd = -1;  // read end of the worker's readiness pipe
  bool ready = false;
  absl::Time started = absl::InfinitePast();
  absl::Time restart_at = absl::InfiniteFuture();  // set while waiting to start again
  absl::Duration backoff = absl::Milliseconds(500);
  int last_status = 0;
};

// Binds (without listening) a SO_REUSEPORT socket to learn the port the
// workers will share when the OS chooses it, and keeps it so nobody else can
// take that port while workers restart.
int ReservePort(const std::string& host, int* port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(*port);
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res) != 0 || res == nullptr) {
    return -1;
  }
  const int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  const bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
                  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == 0 &&
                  bind(fd, res->ai_addr, res->ai_addrlen) == 0;
  freeaddrinfo(res);
  if (!ok) {
    if (fd >= 0) close(fd);
    return -1;
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  *port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return fd;
}

class Supervisor {
 public:
  explicit Supervisor(const SupervisorOptions& options) : options_(options) {}

  int Run() {
    int port = options_.port;
    reserved_fd_ = ReservePort(options_.host, &port);
    if (reserved_fd_ < 0) {
      spdlog::error("cannot bind {}:{} with SO_REUSEPORT: {}", options_.host, options_.port, std::strerror(errno));
      return 1;
    }
    port_ = port;
    instance_id_ = options_.instance_id;
    if (instance_id_.empty()) {
      char host[256] = {0};
      gethostname(host, sizeof(host) - 1);
      instance_id_ = absl::StrCat(host, "-", port_);
    }
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGCHLD);
    sigprocmask(SIG_BLOCK, &sigs, nullptr);
    signal_fd_ = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    workers_.resize(static_cast<size_t>(options_.workers));
    for (int i = 0; i < options_.workers; ++i) {
      workers_[i].index = i;
      Start(workers_[i]);
    }
    spdlog::info("gateway instance {} on port {}: {} workers", instance_id_, port_, options_.workers);
    int exit_status = 0;
    while (true) {
      std::vector<pollfd> fds;
      fds.push_back({signal_fd_, POLLIN, 0});
      for (const Worker& w : workers_) {
        if (w.ready_fd >= 0) fds.push_back({w.ready_fd, POLLIN, 0});
      }
      poll(fds.data(), fds.size(), PollTimeoutMs());
      if (fds[0].revents & POLLIN) HandleSignals();
      for (size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents) ReadReady(fds[i].fd);
      }
      const absl::Time now = absl::Now();
      for (Worker& w : workers_) {
        if (!stopping_ && w.pid < 0 && now >= w.restart_at) Start(w);
      }
      if (stopping_) {
        if (std::none_of(workers_.begin(), workers_.end(), [](const Worker& w) { return w.pid > 0; })) break;
        if (now >= kill_at_) {
          for (Worker& w : workers_) {
            if (w.pid > 0) {
              spdlog::error("worker {} (pid {}) still running after the drain: killing it", w.index, w.pid);
              kill(w.pid, SIGKILL);
            }
          }
          kill_at_ = absl::InfiniteFuture();
        }
      }
    }
    for (const Worker& w : workers_) {
      if (w.last_status != 0) exit_status = 1;
    }
    close(reserved_fd_);
    close(signal_fd_);
    spdlog::info("gateway instance {}: every worker has exited", instance_id_);
    return exit_status;
  }

 private:
  int PollTimeoutMs() const {
    absl::Time next = stopping_ ? kill_at_ : absl::InfiniteFuture();
    for (const Worker& w : workers_) {
      if (w.pid < 0) next = std::min(next, w.restart_at);
    }
    if (next == absl::InfiniteFuture()) return -1;
    return static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(next - absl::Now()) + 1, 0, 60000));
  }

  void Start(Worker& w) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
      spdlog::error("worker {}: pipe: {}", w.index, std::strerror(errno));
      w.restart_at = absl::Now() + w.backoff;
      return;
    }
    std::vector<std::string> args;
    args.push_back(options_.exe);
    args.insert(args.end(), options_.args.begin(), options_.args.end());
    // Later flags win: these make the copy one worker of this instance.
    args.push_back("--workers=1");
    args.push_back("--reuse_port");
    args.push_back(absl::StrCat("--port=", port_));
    args.push_back(absl::StrCat("--id=", instance_id_, "-w", w.index));
    args.push_back(absl::StrCat("--ready_fd=", kReadyFd));
    if (!options_.operator_listen.empty()) {
      const size_t colon = options_.operator_listen.rfind(':');
      int base = 0;
      if (colon != std::string::npos && absl::SimpleAtoi(options_.operator_listen.substr(colon + 1), &base)) {
        args.push_back(absl::StrCat("--operator_listen=", options_.operator_listen.substr(0, colon), ":",
                                    base == 0 ? 0 : base + w.index));
      }
    }
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], kReadyFd);  // dup2 clears close-on-exec
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, options_.exe.c_str(), &actions, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    close(pipe_fds[1]);
    if (rc != 0) {
      close(pipe_fds[0]);
      spdlog::error("worker {}: cannot start {}: {}", w.index, options_.exe, std::strerror(rc));
      w.restart_at = absl::Now() + w.backoff;
      w.backoff = std::min(w.backoff * 2, absl::Seconds(30));
      return;
    }
    w.pid = pid;
    w.ready_fd = pipe_fds[0];
    w.ready = false;
    w.started = absl::Now();
    w.restart_at = absl::InfiniteFuture();
  }

  void ReadReady(int fd) {
    for (Worker& w : workers_) {
      if (w.ready_fd != fd) continue;
      char buf[64];
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n > 0) {
        if (!w.ready) spdlog::info("worker {} (pid {}) ready", w.index, w.pid);
        w.ready = true;
        MaybeAnnounce();
        return;
      }
      // EOF: the worker closed it (it reports readiness once) or exited.
      close(fd);
      w.ready_fd = -1;
      return;
    }
  }

  void MaybeAnnounce() {
    if (announced_ || stopping_) return;
    if (!std::all_of(workers_.begin(), workers_.end(), [](const Worker& w) { return w.ready; })) return;
    announced_ = true;
    std::printf("READY gateway_id=%s port=%d workers=%d\n", instance_id_.c_str(), port_, options_.workers);
    std::fflush(stdout);
  }

  void HandleSignals() {
    signalfd_siginfo si;
    while (read(signal_fd_, &si, sizeof(si)) == sizeof(si)) {
      if (si.ssi_signo == SIGCHLD) {
        Reap();
      } else if (!stopping_) {
        stopping_ = true;
        spdlog::info("signal {}: draining {} workers", si.ssi_signo, options_.workers);
        for (Worker& w : workers_) {
          if (w.pid > 0) kill(w.pid, SIGTERM);
        }
        kill_at_ = absl::Now() + options_.drain + absl::Seconds(20);
      }
    }
    Reap();  // SIGCHLDs merge: look for every exited child each time
  }

  void Reap() {
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      for (Worker& w : workers_) {
        if (w.pid != pid) continue;
        w.pid = -1;
        w.ready = false;
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        w.last_status = stopping_ && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM ? 0 : code;
        if (stopping_) {
          spdlog::info("worker {} (pid {}) exited ({})", w.index, pid, code);
          break;
        }
        // Quick deaths back off (a crash loop must not spin); a worker that
        // ran a while starts again at once.
        if (absl::Now() - w.started > absl::Seconds(10)) w.backoff = absl::Milliseconds(500);
        w.restart_at = absl::Now() + w.backoff;
        spdlog::error("worker {} (pid {}) exited ({}): starting it again in {}", w.index, pid, code,
                      absl::FormatDuration(w.backoff));
        w.backoff = std::min(w.backoff * 2, absl::Seconds(30));
        break;
      }
    }
  }

  const SupervisorOptions options_;
  std::vector<Worker> workers_;
  std::string instance_id_;
  int port_ = 0;
  int reserved_fd_ = -1;
  int signal_fd_ = -1;
  bool stopping_ = false;
  bool announced_ = false;
  absl::Time kill_at_ = absl::InfiniteFuture();
};

}  // namespace

int RunSupervisor(const SupervisorOptions& options) { return Supervisor(options).Run(); }

}  // namespace switchboard::gateway
