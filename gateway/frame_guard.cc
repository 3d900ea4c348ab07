#include "gateway/frame_guard.h"

#include <dlfcn.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gateway/proxy_protocol.h"
#include "spdlog/spdlog.h"

namespace switchboard::gateway {

size_t FrameScanner::Feed(const uint8_t* data, size_t n, const char** why) {
  if (tripped_) {
    *why = "after a protocol error";
    return 0;
  }
  size_t start = 0;  // where the frame being read began in `data` (0: before it)
  size_t i = 0;
  while (i < n) {
    if (have_ == 0 && payload_left_ > 0) {
      const uint64_t skip = std::min<uint64_t>(payload_left_, n - i);
      i += static_cast<size_t>(skip);
      payload_left_ -= skip;
      continue;
    }
    if (have_ == 0) start = i;
    const uint8_t b = data[i++];
    if (have_ == 0) {
      first_ = b;
    } else if (have_ == 1) {
      const uint8_t opcode = first_ & 0x0f;
      const bool fin = (first_ & 0x80) != 0;
      const bool control = opcode >= 0x8;
      const uint8_t len7 = b & 0x7f;
      const char* bad = nullptr;
      if ((b & 0x80) == 0) {
        bad = "unmasked client frame";
      } else if ((first_ & 0x30) != 0) {
        bad = "reserved bits RSV2/RSV3 set";
      } else if ((opcode >= 0x3 && opcode <= 0x7) || opcode >= 0xb) {
        bad = "reserved opcode";
      } else if (control && !fin) {
        bad = "fragmented control frame";
      } else if (control && len7 > 125) {
        bad = "control frame longer than 125 bytes";
      }
      if (bad != nullptr) {
        tripped_ = true;
        *why = bad;
        return start;
      }
      const uint8_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
      need_ = static_cast<uint8_t>(2 + ext + 4);
      payload_left_ = ext ? 0 : len7;
    } else if (have_ < need_ - 4) {
      payload_left_ = (payload_left_ << 8) | b;  // the extended length, big-endian
    }
    // else: a byte of the masking key
    if (++have_ == need_) {
      have_ = 0;
      need_ = 2;
    }
  }
  return kNone;
}

namespace frame_guard {
namespace {

struct Slot {
  FrameScanner scanner;
  uint64_t conn = 0;
  bool watched = false;
  // PROXY protocol: expected, refused (every later read fails), and what
  // was read of it so far / whom it named. Allocated only when used.
  bool expect_proxy = false;
  bool proxy_failed = false;
  std::unique_ptr<std::string> proxy_pending;
  std::unique_ptr<std::string> proxied_client;
};

// Per thread, so the loop needs no lock and other threads' reads never look.
// A plain pointer: thread_local objects with constructors cost a guard on
// every access from code that may run before their initialisation.
thread_local std::vector<Slot>* t_slots = nullptr;
thread_local ViolationHandler t_handler = nullptr;
thread_local void* t_ctx = nullptr;
thread_local uint64_t t_violations = 0;
thread_local uint64_t t_bad_proxy_headers = 0;
thread_local absl::Time t_bad_proxy_logged = absl::InfinitePast();

Slot* Find(int fd) {
  if (t_slots == nullptr || fd < 0 || static_cast<size_t>(fd) >= t_slots->size()) return nullptr;
  return &(*t_slots)[static_cast<size_t>(fd)];
}

Slot& Ensure(int fd) {
  if (t_slots == nullptr) t_slots = new std::vector<Slot>();  // lives as long as the thread's loop may read
  if (static_cast<size_t>(fd) >= t_slots->size()) t_slots->resize(static_cast<size_t>(fd) + 1);
  return (*t_slots)[static_cast<size_t>(fd)];
}

}  // namespace

void SetHandler(ViolationHandler handler, void* ctx) {
  t_handler = handler;
  t_ctx = ctx;
}

void Watch(int fd, uint64_t conn) {
  if (fd < 0) return;
  Slot& slot = Ensure(fd);
  slot.scanner = FrameScanner{};  // what the PROXY header said stays
  slot.conn = conn;
  slot.watched = true;
}

void Forget(int fd) {
  if (Slot* slot = Find(fd)) *slot = Slot{};
}

void ReleaseThread() {
  delete t_slots;
  t_slots = nullptr;
  t_handler = nullptr;
  t_ctx = nullptr;
}

void ExpectProxyHeader(int fd) {
  if (fd < 0) return;
  Slot& slot = Ensure(fd);
  slot = Slot{};
  slot.expect_proxy = true;
}

const std::string* ProxiedClient(int fd) {
  Slot* slot = Find(fd);
  return slot != nullptr ? slot->proxied_client.get() : nullptr;
}

uint64_t bad_proxy_headers() { return t_bad_proxy_headers; }

long FilterRaw(int fd, uint8_t* data, size_t n) {
  Slot* slot = Find(fd);
  if (slot == nullptr || (!slot->expect_proxy && !slot->proxy_failed)) return static_cast<long>(n);
  if (slot->proxy_failed) return kBadHeader;
  if (!slot->proxy_pending) slot->proxy_pending = std::make_unique<std::string>();
  std::string& pending = *slot->proxy_pending;
  pending.append(reinterpret_cast<const char*>(data), n);
  ProxyHeader header;
  std::string why;
  ProxyParse parsed = ParseProxyHeader(reinterpret_cast<const uint8_t*>(pending.data()), pending.size(), &header, &why);
  if (parsed == ProxyParse::kIncomplete && pending.size() > kMaxProxyHeaderBytes) {
    parsed = ProxyParse::kInvalid;
    why = "PROXY header too long";
  }
  if (parsed == ProxyParse::kIncomplete) return kNothingYet;
  if (parsed == ProxyParse::kInvalid) {
    slot->expect_proxy = false;
    slot->proxy_failed = true;
    slot->proxy_pending.reset();
    ++t_bad_proxy_headers;
    const absl::Time now = absl::Now();
    if (now - t_bad_proxy_logged >= absl::Seconds(10)) {  // a flood of bad peers cannot flood the log
      spdlog::warn("a connection from a trusted proxy did not start with a valid PROXY header ({}): closed; "
                   "{} so far", why, t_bad_proxy_headers);
      t_bad_proxy_logged = now;
    }
    return kBadHeader;
  }
  // Whatever followed the header came with this read (everything before it
  // was header): it goes to the front of the caller's buffer.
  const size_t rest = pending.size() - header.length;
  std::memmove(data, pending.data() + header.length, rest);
  slot->proxied_client = std::make_unique<std::string>(std::move(header.client_ip));
  slot->expect_proxy = false;
  slot->proxy_pending.reset();
  return rest == 0 ? kNothingYet : static_cast<long>(rest);
}

uint64_t violations() { return t_violations; }

size_t Filter(int fd, uint8_t* data, size_t n) {
  Slot* found = Find(fd);
  if (found == nullptr || !found->watched) return n;
  Slot& slot = *found;
  if (slot.scanner.tripped()) return 0;
  const char* why = nullptr;
  const size_t at = slot.scanner.Feed(data, n, &why);
  if (at == FrameScanner::kNone) return n;
  ++t_violations;
  if (t_handler != nullptr) t_handler(t_ctx, slot.conn, why);
  return at;
}

bool Watching() { return t_slots != nullptr; }

}  // namespace frame_guard
}  // namespace switchboard::gateway

// The interposed reads (see frame_guard.h). Each calls the next definition
// (libc's or OpenSSL's, or a sanitizer's interceptor) and filters what it
// returns. Reads of a tripped socket are thrown away, at most
// kMaxDiscardReads per call, so a client that keeps sending cannot hold the
// loop.
namespace {

namespace fg = switchboard::gateway::frame_guard;
constexpr int kMaxDiscardReads = 16;

// `read(buf)` is one read of the underlying call; returns what lws gets.
template <typename Read>
long Filtered(int fd, void* buf, long n, Read read) {
  if (n <= 0 || !fg::Watching()) return n;
  size_t keep = fg::Filter(fd, static_cast<uint8_t*>(buf), static_cast<size_t>(n));
  for (int i = 0; keep == 0; ++i) {
    if (i == kMaxDiscardReads) return -2;  // still more: "nothing yet", the loop comes back
    n = read();
    if (n <= 0) return n;  // nothing left, the peer gone, or an error: as they are
    keep = fg::Filter(fd, static_cast<uint8_t*>(buf), static_cast<size_t>(n));
  }
  return static_cast<long>(keep);
}

using RecvFn = ssize_t (*)(int, void*, size_t, int);
using ReadFn = ssize_t (*)(int, void*, size_t);
using SslReadFn = int (*)(SSL*, void*, int);

// The raw layer: a PROXY header taken off; "nothing yet" and a bad header
// become what the caller's errno conventions say.
template <typename Read>
long RawFiltered(int fd, void* buf, long n, Read read) {
  if (n <= 0 || !fg::Watching()) return n;
  for (int i = 0; i < kMaxDiscardReads; ++i) {
    const long r = fg::FilterRaw(fd, static_cast<uint8_t*>(buf), static_cast<size_t>(n));
    if (r != fg::kNothingYet) return r;
    n = read();  // the header may be whole now, or the rest of the stream may follow
    if (n <= 0) return n;
  }
  return fg::kNothingYet;
}

long AsErrno(long r) {
  if (r == fg::kNothingYet) {
    errno = EAGAIN;
    return -1;
  }
  if (r == fg::kBadHeader) {
    errno = ECONNRESET;
    return -1;
  }
  return r;
}

}  // namespace

extern "C" ssize_t read(int fd, void* buf, size_t len) {
  // Under TLS, OpenSSL reads the socket with read(): a PROXY header comes
  // off here, before the handshake sees it.
  static const ReadFn next = reinterpret_cast<ReadFn>(dlsym(RTLD_NEXT, "read"));
  const ssize_t n = next(fd, buf, len);
  if (n <= 0 || !fg::Watching()) return n;
  return AsErrno(RawFiltered(fd, buf, n, [&] { return static_cast<long>(next(fd, buf, len)); }));
}

extern "C" ssize_t recv(int fd, void* buf, size_t len, int flags) {
  static const RecvFn next = reinterpret_cast<RecvFn>(dlsym(RTLD_NEXT, "recv"));
  ssize_t n = next(fd, buf, len, flags);
  if (n <= 0 || (flags & MSG_PEEK) != 0 || !fg::Watching()) return n;
  const long raw = RawFiltered(fd, buf, n, [&] { return static_cast<long>(next(fd, buf, len, flags)); });
  if (raw < 0) return AsErrno(raw);
  if (raw == 0) return 0;
  n = raw;
  const long r = Filtered(fd, buf, n, [&] { return static_cast<long>(next(fd, buf, len, flags)); });
  if (r == -2) {
    errno = EAGAIN;
    return -1;
  }
  return r;
}

extern "C" int SSL_read(SSL* ssl, void* buf, int num) {
  static const SslReadFn next = reinterpret_cast<SslReadFn>(dlsym(RTLD_NEXT, "SSL_read"));
  const int n = next(ssl, buf, num);
  if (n <= 0 || !fg::Watching()) return n;
  const long r = Filtered(SSL_get_fd(ssl), buf, n, [&] { return static_cast<long>(next(ssl, buf, num)); });
  // -2 (still more after the cap): no "nothing yet" can be faked for
  // OpenSSL, so the error ends the connection; only a client flooding a
  // socket it already broke gets there.
  return r == -2 ? -1 : static_cast<int>(r);
}
