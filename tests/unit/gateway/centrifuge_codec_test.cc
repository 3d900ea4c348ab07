#include "gateway/centrifuge_codec.h"

#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

TEST(CentrifugeJsonCodec, DecodesConnectCommandAsTheSdkSendsIt) {
  auto cmds = CentrifugeJsonCodec::DecodeCommands(
      R"({"connect":{"token":"t0k","name":"js","version":"1.2"},"id":1})");
  ASSERT_TRUE(cmds.ok()) << cmds.status();
  ASSERT_EQ(cmds->size(), 1u);
  EXPECT_EQ((*cmds)[0].id(), 1u);
  ASSERT_TRUE((*cmds)[0].has_connect());
  EXPECT_EQ((*cmds)[0].connect().token(), "t0k");
  EXPECT_EQ((*cmds)[0].connect().name(), "js");
  EXPECT_EQ((*cmds)[0].connect().version(), "1.2");
}

TEST(CentrifugeJsonCodec, DecodesNewlineSeparatedBatch) {
  auto cmds = CentrifugeJsonCodec::DecodeCommands("{}\n{\"id\":2,\"ping\":{}}\r\n{\"id\":3,\"rpc\":{}}\n");
  ASSERT_TRUE(cmds.ok()) << cmds.status();
  ASSERT_EQ(cmds->size(), 3u);
  EXPECT_EQ((*cmds)[0].id(), 0u);  // an empty command is a pong
  EXPECT_TRUE((*cmds)[1].has_ping());
  EXPECT_EQ((*cmds)[2].id(), 3u);
}

TEST(CentrifugeJsonCodec, IgnoresUnknownFields) {
  auto cmds = CentrifugeJsonCodec::DecodeCommands(R"({"id":5,"future_field":{"x":1},"ping":{}})");
  ASSERT_TRUE(cmds.ok()) << cmds.status();
  EXPECT_TRUE((*cmds)[0].has_ping());
}

TEST(CentrifugeJsonCodec, RejectsMalformedInput) {
  for (const char* bad : {"", "\n\n", "{bad", "[1,2]", "\"str\"", "42", "{\"id\":-1}", "{\"id\":\"x\"}",
                          "{\"connect\":5,\"id\":1}", "{}\n{oops"}) {
    EXPECT_FALSE(CentrifugeJsonCodec::DecodeCommands(bad).ok()) << bad;
  }
}

TEST(CentrifugeJsonCodec, EncodesConnectReplyWithProtocolFieldNames) {
  v1::ClientReply reply;
  reply.set_id(1);
  reply.mutable_connect()->set_client("c-1");
  reply.mutable_connect()->set_ping(25);
  reply.mutable_connect()->set_pong(true);
  std::string json = CentrifugeJsonCodec::EncodeReply(reply);
  EXPECT_NE(json.find("\"id\":1"), std::string::npos) << json;
  EXPECT_NE(json.find("\"client\":\"c-1\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"ping\":25"), std::string::npos) << json;
  EXPECT_NE(json.find("\"pong\":true"), std::string::npos) << json;
  EXPECT_EQ(json.find('\n'), std::string::npos);
}

TEST(CentrifugeJsonCodec, EncodesErrorReply) {
  v1::ClientReply reply;
  reply.set_id(9);
  reply.mutable_error()->set_code(error_code::kNotAvailable);
  reply.mutable_error()->set_message("not available");
  std::string json = CentrifugeJsonCodec::EncodeReply(reply);
  EXPECT_NE(json.find("\"code\":108"), std::string::npos) << json;
}

TEST(CentrifugeJsonCodec, PingIsAnEmptyObject) { EXPECT_EQ(CentrifugeJsonCodec::EncodePing(), "{}"); }

std::string Delimited(const v1::ClientCommand& cmd) {
  std::string body = cmd.SerializeAsString();
  std::string out;
  size_t n = body.size();
  do {
    uint8_t b = n & 0x7F;
    n >>= 7;
    out.push_back(static_cast<char>(n ? (b | 0x80) : b));
  } while (n);
  return out + body;
}

TEST(CentrifugeProtobufCodec, DecodesDelimitedBatch) {
  v1::ClientCommand connect;
  connect.set_id(1);
  connect.mutable_connect()->set_token(std::string(300, 't'));  // a multi-byte length prefix
  connect.mutable_connect()->set_name("pb");
  v1::ClientCommand ping;
  ping.set_id(2);
  ping.mutable_ping();
  v1::ClientCommand pong;  // empty: zero-length record
  auto cmds = CentrifugeProtobufCodec::DecodeCommands(Delimited(connect) + Delimited(ping) + Delimited(pong));
  ASSERT_TRUE(cmds.ok()) << cmds.status();
  ASSERT_EQ(cmds->size(), 3u);
  EXPECT_EQ((*cmds)[0].connect().token().size(), 300u);
  EXPECT_EQ((*cmds)[0].connect().name(), "pb");
  EXPECT_TRUE((*cmds)[1].has_ping());
  EXPECT_EQ((*cmds)[2].id(), 0u);
}

TEST(CentrifugeProtobufCodec, RejectsTruncatedAndGarbage) {
  v1::ClientCommand connect;
  connect.set_id(1);
  connect.mutable_connect()->set_token("abc");
  std::string good = Delimited(connect);
  EXPECT_FALSE(CentrifugeProtobufCodec::DecodeCommands(good.substr(0, good.size() - 1)).ok());
  EXPECT_FALSE(CentrifugeProtobufCodec::DecodeCommands("").ok());
  EXPECT_FALSE(CentrifugeProtobufCodec::DecodeCommands("\xff\xff\xff\xff\xff\xff").ok());
  EXPECT_FALSE(CentrifugeProtobufCodec::DecodeCommands(std::string("\x05\xff\xff\xff\xff\xff", 6)).ok());
}

TEST(CentrifugeProtobufCodec, EncodesDelimitedReplyAndEmptyPing) {
  v1::ClientReply reply;
  reply.set_id(7);
  reply.mutable_connect()->set_client("c");
  std::string out = CentrifugeProtobufCodec::EncodeReply(reply);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(static_cast<size_t>(static_cast<uint8_t>(out[0])), out.size() - 1);
  v1::ClientReply back;
  ASSERT_TRUE(back.ParseFromString(out.substr(1)));
  EXPECT_EQ(back.id(), 7u);
  EXPECT_EQ(back.connect().client(), "c");
  EXPECT_EQ(CentrifugeProtobufCodec::EncodePing(), std::string(1, '\0'));
}

TEST(CentrifugeJsonCodec, DeeplyNestedCommandIsRejectedNotAStackOverflow) {
  // Nesting is bounded (32 levels) before any parser runs: one frame from an
  // unauthenticated socket must not be able to exhaust the stack.
  const std::string deep(200000, '[');
  auto r = CentrifugeJsonCodec::DecodeCommands(R"({"id":1,"connect":{"token":"x","data":)" + deep);
  EXPECT_FALSE(r.ok());
  std::string balanced = R"({"id":1,"connect":{"data":)" + std::string(5000, '[') + std::string(5000, ']') + "}}";
  EXPECT_FALSE(CentrifugeJsonCodec::DecodeCommands(balanced).ok());
}

}  // namespace
}  // namespace switchboard::gateway
