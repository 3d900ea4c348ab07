// SendToUser at a fixed rate to random users, for the storm benchmark
// (bench.py storm): each message's data is {"t": CLOCK_MONOTONIC us at the
// call, "s": sequence}, so switchboard-loadgen can time it at the client's
// socket and count duplicates. Prints one JSON line at the end: calls made,
// answers by status, complete or not, sessions delivered (summed from the
// answers, to compare with what the clients counted), not delivered by
// reason, and call latency percentiles.
//   switchboard-send-storm --config F --rate 2000 --seconds 60
//       --user_prefixes g0u,g1u --users 2500 [--concurrency 512]
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/config.h"
#include "common/grpc_tls.h"
#include "grpcpp/grpcpp.h"
#include "switchboard/v1/control.grpc.pb.h"

ABSL_FLAG(std::string, config, "", "the cluster's config (control address, API key, TLS)");
ABSL_FLAG(double, rate, 1000, "calls per second");
ABSL_FLAG(double, seconds, 10, "how long");
ABSL_FLAG(std::string, user_prefixes, "u", "comma-separated user ID prefixes (one per load generator)");
ABSL_FLAG(int, users, 100, "users per prefix: <prefix><0..users-1>");
ABSL_FLAG(int, concurrency, 1024, "calls in flight at most (a call due while this many wait is counted as skipped)");
ABSL_FLAG(int, timeout_ms, 2000, "each call's deadline");
ABSL_FLAG(std::string, hot_user, "", "a user who gets --hot_share of the calls (e.g. one with a slow reader)");
ABSL_FLAG(double, hot_share, 0, "the share of calls to --hot_user");
ABSL_FLAG(int, pad, 0, "bytes of padding in each message's data");

namespace sb = switchboard;

namespace {

int64_t MonoUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

struct Call {
  grpc::ClientContext ctx;
  sb::v1::SendToUserResponse resp;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<sb::v1::SendToUserResponse>> reader;
  int64_t started_us = 0;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto config = sb::LoadConfig(absl::GetFlag(FLAGS_config));
  if (!config.ok()) {
    std::fprintf(stderr, "config: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  const std::vector<std::string> prefixes = absl::StrSplit(absl::GetFlag(FLAGS_user_prefixes), ',');
  const int users = std::max(1, absl::GetFlag(FLAGS_users));
  const double rate = absl::GetFlag(FLAGS_rate);
  const int64_t total = static_cast<int64_t>(rate * absl::GetFlag(FLAGS_seconds));
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const std::string api_key = config->api_keys_size() > 0 ? config->api_keys(0) : "";
  auto stub = sb::v1::Control::NewStub(
      grpc::CreateChannel(config->control().addresses(0), sb::ChannelCredentials(*config)));

  grpc::CompletionQueue cq;
  std::atomic<int> in_flight{0};
  // Results, written by the collecting thread only.
  std::map<std::string, int64_t> by_status, not_delivered;
  int64_t answered = 0, incomplete = 0, delivered = 0;
  std::vector<int64_t> latency_us;
  latency_us.reserve(static_cast<size_t>(total));
  std::thread collector([&] {
    void* tag = nullptr;
    bool ok = false;
    while (cq.Next(&tag, &ok)) {
      std::unique_ptr<Call> call(static_cast<Call*>(tag));
      latency_us.push_back(MonoUs() - call->started_us);
      ++answered;
      if (!call->status.ok()) {
        ++by_status[std::to_string(call->status.error_code())];
      } else {
        ++by_status["OK"];
        if (!call->resp.coverage().complete()) ++incomplete;
        delivered += call->resp.delivered();
        for (const auto& [why, n] : call->resp.not_delivered()) not_delivered[why] += n;
      }
      in_flight.fetch_sub(1);
    }
  });

  const std::string hot_user = absl::GetFlag(FLAGS_hot_user);
  const double hot_share = absl::GetFlag(FLAGS_hot_share);
  const int pad = absl::GetFlag(FLAGS_pad);
  std::mt19937_64 rng(7);
  int64_t skipped = 0;
  const int64_t t0 = MonoUs();
  for (int64_t i = 0; i < total; ++i) {
    const int64_t due = t0 + static_cast<int64_t>(static_cast<double>(i) * 1e6 / rate);
    const int64_t now = MonoUs();
    if (due > now) std::this_thread::sleep_for(std::chrono::microseconds(due - now));
    if (in_flight.load() >= concurrency) {
      ++skipped;
      continue;
    }
    auto* call = new Call();
    sb::v1::SendToUserRequest req;
    req.set_app_id(config->default_app());
    const bool hot = !hot_user.empty() && static_cast<double>(rng() % 1000000) < hot_share * 1e6;
    req.set_user_id(hot ? hot_user : absl::StrCat(prefixes[rng() % prefixes.size()], rng() % users));
    req.set_event("storm");
    call->started_us = MonoUs();
    auto* fields = req.mutable_data()->mutable_struct_value()->mutable_fields();
    (*fields)["t"].set_number_value(static_cast<double>(call->started_us));
    (*fields)["s"].set_number_value(static_cast<double>(i));
    if (pad > 0) (*fields)["pad"].set_string_value(std::string(static_cast<size_t>(pad), 'x'));
    call->ctx.AddMetadata("authorization", "apikey " + api_key);
    call->ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
    in_flight.fetch_add(1);
    call->reader = stub->AsyncSendToUser(&call->ctx, req, &cq);
    call->reader->Finish(&call->resp, &call->status, call);
  }
  const double elapsed_s = static_cast<double>(MonoUs() - t0) / 1e6;
  while (in_flight.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  cq.Shutdown();
  collector.join();

  std::sort(latency_us.begin(), latency_us.end());
  auto pct = [&](double p) {
    return latency_us.empty() ? 0.0 : latency_us[static_cast<size_t>(p * (latency_us.size() - 1))] / 1000.0;
  };
  auto object = [](const std::map<std::string, int64_t>& m) {
    std::string out;
    for (const auto& [k, v] : m) absl::StrAppend(&out, out.empty() ? "" : ",", "\"", k, "\":", v);
    return "{" + out + "}";
  };
  std::printf(
      "{\"calls\":%lld,\"skipped_behind\":%lld,\"rate_achieved\":%.0f,\"answered\":%lld,\"by_status\":%s,"
      "\"incomplete\":%lld,\"delivered\":%lld,\"not_delivered\":%s,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
      static_cast<long long>(total - skipped), static_cast<long long>(skipped),
      static_cast<double>(total - skipped) / elapsed_s, static_cast<long long>(answered), object(by_status).c_str(),
      static_cast<long long>(incomplete), static_cast<long long>(delivered), object(not_delivered).c_str(), pct(0.5),
      pct(0.99), pct(1.0));
  return 0;
}
