#include "gateway/centrifuge_codec.h"

#include "absl/strings/str_cat.h"
#include "common/json_depth.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/json_util.h"

namespace switchboard::gateway {

absl::StatusOr<std::vector<v1::ClientCommand>> CentrifugeJsonCodec::DecodeCommands(
    std::string_view frame) {
  std::vector<v1::ClientCommand> out;
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = true;
  size_t start = 0;
  while (start <= frame.size()) {
    size_t end = frame.find('\n', start);
    if (end == std::string_view::npos) end = frame.size();
    std::string_view line = frame.substr(start, end - start);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (!line.empty()) {
      if (line.front() != '{') return absl::InvalidArgumentError("command is not a JSON object");
      if (!JsonDepthWithin(line)) return absl::InvalidArgumentError("command nests too deeply");
      v1::ClientCommand cmd;
      auto st = google::protobuf::util::JsonStringToMessage(
          google::protobuf::StringPiece(line.data(), line.size()), &cmd, opts);
      if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat("bad command: ", st.message().as_string()));
      out.push_back(std::move(cmd));
    }
    start = end + 1;
  }
  if (out.empty()) return absl::InvalidArgumentError("empty frame");
  return out;
}

std::string CentrifugeJsonCodec::EncodeReply(const v1::ClientReply& reply) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  // A reply built by the gateway always serialises.
  (void)google::protobuf::util::MessageToJsonString(reply, &out, opts);
  return out;
}

absl::StatusOr<std::vector<v1::ClientCommand>> CentrifugeProtobufCodec::DecodeCommands(
    std::string_view frame) {
  std::vector<v1::ClientCommand> out;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(frame.data()),
                                            static_cast<int>(frame.size()));
  while (in.CurrentPosition() < static_cast<int>(frame.size())) {
    uint32_t len = 0;
    if (!in.ReadVarint32(&len)) return absl::InvalidArgumentError("bad length prefix");
    if (len > frame.size() - static_cast<size_t>(in.CurrentPosition())) {
      return absl::InvalidArgumentError("command longer than the frame");
    }
    auto limit = in.PushLimit(static_cast<int>(len));
    v1::ClientCommand cmd;
    if (!cmd.ParseFromCodedStream(&in) || !in.ConsumedEntireMessage()) {
      return absl::InvalidArgumentError("bad protobuf command");
    }
    in.PopLimit(limit);
    out.push_back(std::move(cmd));
  }
  if (out.empty()) return absl::InvalidArgumentError("empty frame");
  return out;
}

std::string CentrifugeProtobufCodec::EncodeReply(const v1::ClientReply& reply) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream raw(&out);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.WriteVarint32(static_cast<uint32_t>(reply.ByteSizeLong()));
    reply.SerializeWithCachedSizes(&coded);
  }
  return out;
}

}  // namespace switchboard::gateway
