// switchboard-nats-scatter-ref: the NATS.c scatter-gather the benchmarks
// compare UserConnections with. K replier connections subscribe to one
// subject and answer every request with a small message; a requester
// publishes with a reply inbox and waits for all K answers, `--calls` times.
// Every connection sends as soon as it can (natsOptions_SetSendAsap), as the
// gateway and control do.
//
//   switchboard-nats-scatter-ref --url nats://127.0.0.1:4222 --repliers 4 --calls 1000
//
// Prints one JSON line: {"repliers":K,"calls":N,"p50_ms":..,"p99_ms":..}.
// Threading: NATS.c's threads deliver to the repliers; the requester is main.
//
// With --role=replier the process only answers (one replier, until killed;
// it prints "ready" once subscribed) and with --role=requester it only asks
// (expecting --repliers answers): K replier processes and one requester are
// the same scatter-gather spread over processes as Switchboard's gateways are.
//
// With --subject, --inbox and --payload_file the requester asks Switchboard's
// own gateways instead (a real BusRequest, under control's NATS user): the
// fan-out of a UserConnections call without control and gRPC around it.

#include <nats/nats.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"

ABSL_FLAG(std::string, url, "nats://127.0.0.1:4222", "NATS server");
ABSL_FLAG(int, repliers, 2, "replier connections (K)");
ABSL_FLAG(int, calls, 1000, "scatter-gather rounds");
ABSL_FLAG(int, reply_bytes, 64, "bytes in each answer");
ABSL_FLAG(int, pause_us, 0,
          "idle time before each round, not counted (a paced caller instead of a tight loop, as "
          "switchboardctl --pause_us)");
ABSL_FLAG(std::string, subject, "ref.scatter", "subject the requests go to (and the repliers listen on)");
ABSL_FLAG(std::string, inbox, "", "the requester's reply subject (default: a NATS.c inbox)");
ABSL_FLAG(std::string, payload_file, "", "the request's bytes (default: one byte)");
ABSL_FLAG(std::string, role, "all", "all (K repliers and the requester in this process), replier or requester");

namespace {

std::string g_reply;

void OnRequest(natsConnection* nc, natsSubscription*, natsMsg* msg, void*) {
  if (natsMsg_GetReply(msg) != nullptr) {
    natsConnection_Publish(nc, natsMsg_GetReply(msg), g_reply.data(), static_cast<int>(g_reply.size()));
  }
  natsMsg_Destroy(msg);
}

natsConnection* Connect(const std::string& url) {
  natsOptions* opts = nullptr;
  natsConnection* nc = nullptr;
  if (natsOptions_Create(&opts) != NATS_OK) return nullptr;
  natsOptions_SetURL(opts, url.c_str());
  natsOptions_SetSendAsap(opts, true);
  if (natsConnection_Connect(&nc, opts) != NATS_OK) nc = nullptr;
  natsOptions_Destroy(opts);
  return nc;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string url = absl::GetFlag(FLAGS_url);
  const int k = std::max(1, absl::GetFlag(FLAGS_repliers));
  const int calls = std::max(1, absl::GetFlag(FLAGS_calls));
  g_reply.assign(static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_reply_bytes))), 'x');
  const std::string role = absl::GetFlag(FLAGS_role);
  const std::string subject = absl::GetFlag(FLAGS_subject);
  std::string payload = "q";
  if (!absl::GetFlag(FLAGS_payload_file).empty()) {
    std::ifstream in(absl::GetFlag(FLAGS_payload_file), std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read --payload_file\n");
      return 2;
    }
    payload.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (role != "all" && role != "replier" && role != "requester") {
    std::fprintf(stderr, "--role: all, replier or requester\n");
    return 2;
  }
  std::vector<natsConnection*> repliers;
  std::vector<natsSubscription*> subs;
  for (int i = 0; i < (role == "all" ? k : role == "replier" ? 1 : 0); ++i) {
    natsConnection* nc = Connect(url);
    natsSubscription* sub = nullptr;
    if (nc == nullptr || natsConnection_Subscribe(&sub, nc, subject.c_str(), OnRequest, nullptr) != NATS_OK) {
      std::fprintf(stderr, "cannot connect/subscribe to %s\n", url.c_str());
      return 1;
    }
    natsConnection_Flush(nc);
    repliers.push_back(nc);
    subs.push_back(sub);
  }
  if (role == "replier") {
    std::printf("ready\n");
    std::fflush(stdout);
    for (;;) nats_Sleep(1000);  // answers on NATS.c's threads until killed
  }
  natsConnection* req = Connect(url);
  natsInbox* inbox = nullptr;
  natsSubscription* replies = nullptr;
  const std::string fixed_inbox = absl::GetFlag(FLAGS_inbox);
  if (req == nullptr || (fixed_inbox.empty() && natsInbox_Create(&inbox) != NATS_OK) ||
      natsConnection_SubscribeSync(&replies, req, fixed_inbox.empty() ? inbox : fixed_inbox.c_str()) != NATS_OK) {
    std::fprintf(stderr, "cannot connect the requester to %s\n", url.c_str());
    return 1;
  }
  natsConnection_Flush(req);
  std::vector<double> ms;
  int missing = 0;
  const absl::Duration pause = absl::Microseconds(std::max(0, absl::GetFlag(FLAGS_pause_us)));
  for (int c = 0; c < calls; ++c) {
    if (pause > absl::ZeroDuration()) absl::SleepFor(pause);  // pacing, not a wait for anything
    const absl::Time t0 = absl::Now();
    natsConnection_PublishRequest(req, subject.c_str(), fixed_inbox.empty() ? inbox : fixed_inbox.c_str(),
                                  payload.data(), static_cast<int>(payload.size()));
    for (int got = 0; got < k; ++got) {
      natsMsg* m = nullptr;
      if (natsSubscription_NextMsg(&m, replies, 2000) != NATS_OK) {
        ++missing;
        break;
      }
      natsMsg_Destroy(m);
    }
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  std::sort(ms.begin(), ms.end());
  std::printf("{\"repliers\":%d,\"calls\":%d,\"missing\":%d,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n", k, calls, missing,
              ms[ms.size() / 2], ms[static_cast<size_t>(0.99 * (ms.size() - 1))]);
  natsSubscription_Destroy(replies);
  if (inbox != nullptr) natsInbox_Destroy(inbox);
  natsConnection_Destroy(req);
  for (natsSubscription* s : subs) natsSubscription_Destroy(s);
  for (natsConnection* nc : repliers) natsConnection_Destroy(nc);
  nats_Close();
  return missing == 0 ? 0 : 1;
}
