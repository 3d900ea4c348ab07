// libFuzzer target: the body of POST /connection/uni_http_stream (one JSON
// connect request) through the real hub, then the stream's life: pings,
// token expiry after the grace, terminate.
#include "tests/fuzz/fuzz_hub.h"

using namespace switchboard;
using namespace switchboard::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedHub f;
  gateway::Hub& hub = f.hub;
  gateway::ConnectionMeta meta;
  meta.remote_addr = "10.1.2.3";
  meta.wire = gateway::Wire::kUniHttpStream;
  meta.connect_body.assign(reinterpret_cast<const char*>(data), size);
  hub.OnOpen(1, meta);
  // A frame on a one-way stream is a protocol error, never a crash.
  hub.OnFrame(1, "{}", false);
  // A server message to the stream's user (its payload: the body itself).
  SendToLastUser(hub, f.observer, meta.connect_body);
  Finish(hub, f.now, f.observer, {1});
  return 0;
}
