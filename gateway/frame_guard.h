#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace switchboard::gateway {

// RFC 6455 §5.1/§5.5: what libwebsockets 4.1 does not check in a client's
// frames, and must make the server fail the connection with 1002: a frame
// without the mask bit (lws reads it as if masked), a control frame longer
// than 125 bytes or fragmented (lws drops the socket without a close frame),
// a reserved opcode, RSV2/RSV3 set (no extension here uses them).
//
// FrameScanner reads the client's byte stream beside lws: only the frame
// headers, in order, never the payload. Pure, so unit-testable.
class FrameScanner {
 public:
  static constexpr size_t kNone = static_cast<size_t>(-1);

  // Scans the next `n` bytes of the stream. Returns kNone while every frame
  // header so far is allowed; otherwise the offset in `data` of the first
  // byte of the offending frame (0 when its header began in an earlier
  // call), with `why` set. After a violation the scanner stays tripped.
  size_t Feed(const uint8_t* data, size_t n, const char** why);
  bool tripped() const { return tripped_; }

 private:
  uint64_t payload_left_ = 0;
  uint8_t first_ = 0;  // the frame's first byte (FIN, RSV, opcode), judged with the second
  uint8_t have_ = 0;   // header bytes seen of the frame being read
  uint8_t need_ = 2;   // header bytes it has (known after 2)
  bool tripped_ = false;
};

// The bridge between lws's reads and FrameScanner. libwebsockets 4.1 reads a
// client socket with recv() (plain) or SSL_read() (TLS) and offers no hook
// between the bytes and its frame parser, so the gateway binary defines both
// symbols (the dynamic linker prefers the executable's) and passes every
// call through, looking only at the descriptors registered here. Only the
// thread that registered a descriptor (the loop) ever scans it: a read by
// another thread (NATS, gRPC) costs one thread-local check.
//
// On a violation the read hands lws only the whole frames before the
// offending one, calls the handler (which closes the connection with 1002
// through the ordinary close handshake), and every later read on that
// socket is discarded.
//
// The same taps take a PROXY protocol header (gateway/proxy_protocol.h) off
// the front of a connection from a trusted proxy before lws reads anything:
// at the raw layer (recv for plain sockets; read, which OpenSSL's socket
// BIO uses, under TLS), so the header never reaches the HTTP parser or the
// TLS handshake.
namespace frame_guard {

using ViolationHandler = void (*)(void* ctx, uint64_t conn, const char* why);

// Loop thread. The handler runs inside lws's read: it may only queue work.
void SetHandler(ViolationHandler handler, void* ctx);
// Loop thread: from now on the descriptor carries WebSocket frames of
// connection `conn` (call at the upgrade); Forget when the socket goes.
void Watch(int fd, uint64_t conn);
void Forget(int fd);
// Loop thread, when its loop has ended: drops this thread's table and
// handler (a loop on a thread that then exits would leak the table).
void ReleaseThread();
// How many connections were failed so far (this thread).
uint64_t violations();
// Whether this thread watches any descriptor (the interposed reads' fast path).
bool Watching();

// What the interposed reads do with `n` > 0 bytes just read from `fd`:
// returns how many of them lws may see (0: none; the caller then reports
// "nothing yet"). Exposed for the unit test.
size_t Filter(int fd, uint8_t* data, size_t n);

// Loop thread, before lws adopts the socket: its first bytes must be a PROXY
// header (v1 or v2). Forget() (a new socket) drops this and what was read.
void ExpectProxyHeader(int fd);
// The client the socket's PROXY header named once it was read: nullptr
// before that or without one; "" for LOCAL / UNKNOWN (the proxy's own).
const std::string* ProxiedClient(int fd);
// The raw-layer tap on `n` > 0 bytes just read into `data` (room for `n`):
// how many lws may see (the header taken off, the rest moved to the front),
// kNothingYet, or kBadHeader (the read fails: lws drops the socket).
// (Negative, and apart from -1, which is a read's own error.)
inline constexpr long kNothingYet = -3;
inline constexpr long kBadHeader = -4;
long FilterRaw(int fd, uint8_t* data, size_t n);
// How many PROXY headers were refused so far (this thread).
uint64_t bad_proxy_headers();

}  // namespace frame_guard
}  // namespace switchboard::gateway
