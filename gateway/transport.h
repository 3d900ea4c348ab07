#pragma once

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "switchboard/v1/bus.pb.h"

namespace switchboard::gateway {

using ConnId = uint64_t;

// What the hub needs from the socket layer. Loop thread only.
class Transport {
 public:
  virtual ~Transport() = default;
  // Queues a frame. False if the connection is gone or its outbox is full (in
  // which case the transport closes it as slow).
  virtual bool Send(ConnId conn, std::string frame, bool binary) = 0;
  // Flushes what is queued, then closes with this code and reason.
  virtual void Close(ConnId conn, int code, const std::string& reason) = 0;
  // One timer per connection; re-arming replaces it. The hub gets OnTimer().
  virtual void ArmTimer(ConnId conn, absl::Duration after) = 0;
  // Call Hub::OnWritten(conn) once everything sent to `conn` so far has been
  // written to its socket (at once if nothing is waiting). Used to count a
  // pong deadline from when the ping really left, not from when it was queued.
  virtual void NotifyWhenWritten(ConnId conn) = 0;
};

// Told about session changes, in order, on the loop thread (the control link
// queues them for the control service).
class SessionObserver {
 public:
  virtual ~SessionObserver() = default;
  virtual void OnSessionOpened(const v1::SessionRecord& record) = 0;
  virtual void OnSessionClosed(const std::string& client_id) = 0;
};

}  // namespace switchboard::gateway
