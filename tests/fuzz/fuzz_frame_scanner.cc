// libFuzzer target: the frame guard's header scanner (gateway/frame_guard.h).
// First byte: the read size (1-64) the stream is cut into. The verdict must
// not depend on how the stream is cut: the same first offending frame (or
// none), and never more than its first header byte shown before it.
#include <cstdint>
#include <cstdlib>

#include "gateway/frame_guard.h"

using switchboard::gateway::FrameScanner;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t chunk = 1 + (data[0] % 64);
  ++data;
  --size;
  FrameScanner whole;
  const char* why_whole = nullptr;
  const size_t at = whole.Feed(data, size, &why_whole);
  FrameScanner cut;
  const char* why_cut = nullptr;
  size_t shown = FrameScanner::kNone;
  for (size_t off = 0; off < size; off += chunk) {
    const size_t n = size - off < chunk ? size - off : chunk;
    const size_t a = cut.Feed(data + off, n, &why_cut);
    if (a != FrameScanner::kNone) {
      if (a > n) abort();
      shown = off + a;
      break;
    }
  }
  if ((at == FrameScanner::kNone) != (shown == FrameScanner::kNone)) abort();
  if (at != FrameScanner::kNone) {
    if (at > size || shown < at || shown > at + 1) abort();
    if (why_whole == nullptr || why_cut == nullptr) abort();
  }
  return 0;
}
