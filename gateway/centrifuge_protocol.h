#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/client_protocol.h"
#include "switchboard/v1/client.pb.h"

namespace switchboard::gateway {

// Centrifugo's client protocol v2 on a bidirectional WebSocket: connect with a
// token, refresh, ping/pong, expiry after a grace, disconnect by close code.
// The two encodings (JSON text frames, protobuf binary frames) differ only in
// their codec, supplied by the subclass. Loop thread only.
class CentrifugeProtocol : public ClientProtocol {
 public:
  // Nothing per connection: whether it is connected is the host's session.
  bool shared() const override { return true; }
  void OnOpen(ConnectionHost& host) override;
  void OnFrame(ConnectionHost& host, std::string_view data, bool binary) override;
  void SendPing(ConnectionHost& host) override;
  int OnClose(ConnectionHost& host, int code, const std::string& reason) override;
  // A publication on the user's personal channel.
  DeliverResult Deliver(ConnectionHost& host, const ServerMessage& message) override;

 protected:
  virtual bool binary() const = 0;
  // The push of a publication of `data_json` on `channel`, as one frame.
  virtual std::string EncodePublication(const std::string& channel, const std::string& data_json) const = 0;
  virtual absl::StatusOr<std::vector<v1::ClientCommand>> Decode(std::string_view frame) const = 0;
  virtual std::string Encode(const v1::ClientReply& reply) const = 0;
  virtual std::string Ping() const = 0;

 private:
  void HandleCommand(ConnectionHost& host, const v1::ClientCommand& cmd);
  void HandleConnect(ConnectionHost& host, const v1::ClientCommand& cmd);
  void HandleRefresh(ConnectionHost& host, const v1::ClientCommand& cmd);
  void Reply(ConnectionHost& host, const v1::ClientReply& reply) { host.Send(Encode(reply), binary()); }
  void Error(ConnectionHost& host, uint32_t cmd_id, uint32_t code, const std::string& message);
};

class CentrifugeJsonProtocol final : public CentrifugeProtocol {
 public:
  const char* protocol() const override { return "json"; }

 protected:
  bool binary() const override { return false; }
  absl::StatusOr<std::vector<v1::ClientCommand>> Decode(std::string_view frame) const override;
  std::string Encode(const v1::ClientReply& reply) const override;
  std::string Ping() const override;
  std::string EncodePublication(const std::string& channel, const std::string& data_json) const override;
};

class CentrifugeProtobufProtocol final : public CentrifugeProtocol {
 public:
  const char* protocol() const override { return "protobuf"; }

 protected:
  bool binary() const override { return true; }
  absl::StatusOr<std::vector<v1::ClientCommand>> Decode(std::string_view frame) const override;
  std::string Encode(const v1::ClientReply& reply) const override;
  std::string Ping() const override;
  std::string EncodePublication(const std::string& channel, const std::string& data_json) const override;
};

// Centrifugo's unidirectional HTTP stream: the POST body is the connect
// request; out go JSON lines (the connect push, `{}` pings, a disconnect
// object at the end). Nothing comes in, so no refresh: an expired token ends
// the stream. Loop thread only.
class CentrifugeUniStreamProtocol final : public ClientProtocol {
 public:
  const char* transport() const override { return "uni_http_stream"; }
  const char* protocol() const override { return "json"; }
  bool shared() const override { return true; }
  bool ExpectsPong() const override { return false; }
  void OnOpen(ConnectionHost& host) override;
  void OnFrame(ConnectionHost& host, std::string_view data, bool binary) override;
  void SendPing(ConnectionHost& host) override;
  int OnClose(ConnectionHost& host, int code, const std::string& reason) override;
  DeliverResult Deliver(ConnectionHost& host, const ServerMessage& message) override;

 private:
  void Push(ConnectionHost& host, const v1::ClientPush& push);
};

}  // namespace switchboard::gateway
