// switchboard-wakecost: what it costs on this machine to wake a thread that
// sleeps in a blocking read, as a function of how long it slept. Two parties
// share a socketpair; the asker writes a timestamp and blocks in read; the
// answerer, woken, spins --sleeps µs (so the asker sleeps that long), then
// writes its own timestamp. The asker's wake-up is the time from that write
// to the asker's read returning. Parties are two processes (as a call's hops
// between client, control, nats-server and gateways are) or, with
// --mode=threads, two threads of one process (as the hops inside NATS.c's
// reference scatter are). bench.py prints it next to the latency figures: a
// call that passes through more processes, each sleeping longer between its
// turns, pays more per wake-up than two tight loops do.
//
//   switchboard-wakecost --mode processes --rounds 2000 --sleeps 0,50,100,200,300,500,1000
//
// Prints one JSON line: {"mode":..,"rounds":N,"rows":[{"sleep_us":S,"wake_p50_us":..,
// "wake_p90_us":..},...]}.

#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

ABSL_FLAG(std::string, mode, "processes", "processes or threads");
ABSL_FLAG(int, rounds, 2000, "round trips per sleep length");
ABSL_FLAG(std::string, sleeps, "0,50,100,200,300,500,1000", "how long the asker sleeps, µs (comma-separated)");

namespace {

int64_t NowNs() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

void Spin(int64_t ns) {
  const int64_t end = NowNs() + ns;
  while (NowNs() < end) {
  }
}

struct Msg {
  int64_t stamp_ns;
  int64_t spin_ns;  // < 0: stop
};

bool ReadFull(int fd, Msg* m) { return read(fd, m, sizeof *m) == static_cast<ssize_t>(sizeof *m); }
bool WriteFull(int fd, const Msg& m) { return write(fd, &m, sizeof m) == static_cast<ssize_t>(sizeof m); }

// The answerer: woken by each request, spins as asked, answers with the time
// of its write.
void Answer(int fd) {
  Msg m{};
  while (ReadFull(fd, &m) && m.spin_ns >= 0) {
    Spin(m.spin_ns);
    m.stamp_ns = NowNs();
    if (!WriteFull(fd, m)) break;
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const int rounds = std::max(10, absl::GetFlag(FLAGS_rounds));
  std::vector<int> sleeps;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_sleeps), ',', absl::SkipEmpty())) {
    int us = 0;
    if (!absl::SimpleAtoi(s, &us) || us < 0 || us > 100000) {
      std::fprintf(stderr, "--sleeps: comma-separated µs between 0 and 100000\n");
      return 2;
    }
    sleeps.push_back(us);
  }
  if ((mode != "processes" && mode != "threads") || sleeps.empty()) {
    std::fprintf(stderr, "--mode: processes or threads; --sleeps: at least one\n");
    return 2;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
    std::perror("socketpair");
    return 1;
  }
  std::thread answerer_thread;
  pid_t child = -1;
  if (mode == "threads") {
    answerer_thread = std::thread(Answer, sv[1]);
  } else {
    child = fork();
    if (child < 0) {
      std::perror("fork");
      return 1;
    }
    if (child == 0) {
      close(sv[0]);
      Answer(sv[1]);
      _exit(0);
    }
    close(sv[1]);
  }
  std::vector<std::string> rows;
  std::vector<double> wake(static_cast<size_t>(rounds));
  bool ok = true;
  for (int us : sleeps) {
    for (int i = 0; i < rounds && ok; ++i) {
      Msg m{NowNs(), int64_t{us} * 1000};
      Msg back{};
      ok = WriteFull(sv[0], m) && ReadFull(sv[0], &back);
      wake[static_cast<size_t>(i)] = static_cast<double>(NowNs() - back.stamp_ns) / 1000.0;
      Spin(50000);  // the answerer sleeps a little between rounds too
    }
    if (!ok) break;
    std::sort(wake.begin(), wake.end());
    rows.push_back(absl::StrCat("{\"sleep_us\":", us, ",\"wake_p50_us\":", wake[wake.size() / 2],
                                ",\"wake_p90_us\":", wake[wake.size() * 9 / 10], "}"));
  }
  Msg stop{0, -1};
  (void)WriteFull(sv[0], stop);
  if (answerer_thread.joinable()) answerer_thread.join();
  if (child > 0) waitpid(child, nullptr, 0);
  if (!ok) {
    std::fprintf(stderr, "the answerer went away\n");
    return 1;
  }
  std::printf("{\"mode\":\"%s\",\"rounds\":%d,\"rows\":[%s]}\n", mode.c_str(), rounds,
              absl::StrJoin(rows, ",").c_str());
  return 0;
}
