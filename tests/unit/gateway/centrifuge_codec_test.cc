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

}  // namespace
}  // namespace switchboard::gateway
