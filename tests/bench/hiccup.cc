// switchboard-hiccup: how often this machine takes a CPU away from a running
// thread, and for how long. One thread per CPU, pinned, reads the monotonic
// clock in a loop for --seconds and counts the gaps between two reads longer
// than 0.2, 1 and 3 ms. On an idle machine those gaps are time the CPU spent
// elsewhere (the hypervisor, interrupts, other tenants): a floor under every
// tail latency measured in the same minute. bench.py prints it before the
// latency figures, with nothing else of ours running.
//
//   switchboard-hiccup --seconds 5
//
// Prints one JSON line: {"cpus":N,"seconds":S,"per_cpu":[{"cpu":0,"gaps_over_0_2ms":..,
// "gaps_over_1ms":..,"gaps_over_3ms":..,"max_ms":..},...]}.

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

ABSL_FLAG(double, seconds, 5, "how long each CPU is watched");

namespace {

int64_t NowNs() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

struct Gaps {
  int cpu = 0;
  int64_t over_0_2ms = 0, over_1ms = 0, over_3ms = 0, max_ns = 0;
};

void Watch(Gaps* g, int64_t duration_ns) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(g->cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  const int64_t end = NowNs() + duration_ns;
  int64_t prev = NowNs();
  for (;;) {
    const int64_t t = NowNs();
    const int64_t gap = t - prev;
    prev = t;
    if (gap > 200000) ++g->over_0_2ms;
    if (gap > 1000000) ++g->over_1ms;
    if (gap > 3000000) ++g->over_3ms;
    g->max_ns = std::max(g->max_ns, gap);
    if (t >= end) break;
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const double seconds = std::max(0.1, absl::GetFlag(FLAGS_seconds));
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  sched_getaffinity(0, sizeof(allowed), &allowed);
  std::vector<Gaps> gaps;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &allowed)) gaps.push_back(Gaps{c});
  }
  std::vector<std::thread> threads;
  for (auto& g : gaps) threads.emplace_back(Watch, &g, static_cast<int64_t>(seconds * 1e9));
  for (auto& t : threads) t.join();
  std::vector<std::string> rows;
  for (const auto& g : gaps) {
    rows.push_back(absl::StrCat("{\"cpu\":", g.cpu, ",\"gaps_over_0_2ms\":", g.over_0_2ms, ",\"gaps_over_1ms\":",
                                g.over_1ms, ",\"gaps_over_3ms\":", g.over_3ms, ",\"max_ms\":", g.max_ns / 1e6, "}"));
  }
  std::printf("{\"cpus\":%zu,\"seconds\":%g,\"per_cpu\":[%s]}\n", gaps.size(), seconds,
              absl::StrJoin(rows, ",").c_str());
  return 0;
}
