#include "common/answer_mac.h"

#include "gtest/gtest.h"
#include "switchboard/v1/bus.pb.h"

namespace switchboard {
namespace {

TEST(AnswerMac, ASignedAnswerParsesAsBeforeAndVerifiesOnlyWithItsKey) {
  v1::BusReply reply;
  reply.set_format_version(1);
  reply.set_request_id("r-1");
  reply.set_gateway_id("gw-1");
  reply.set_closed(3);
  const std::string key = NewAnswerKey();
  ASSERT_EQ(key.size(), kAnswerKeyBytes);
  const std::string signed_bytes = SignAnswer(key, reply.SerializeAsString());
  v1::BusReply parsed;
  ASSERT_TRUE(parsed.ParseFromString(signed_bytes));
  EXPECT_EQ(parsed.closed(), 3u);
  EXPECT_EQ(parsed.mac().size(), kAnswerKeyBytes);
  std::string_view body, mac;
  ASSERT_TRUE(SplitSignedAnswer(signed_bytes, &body, &mac));
  EXPECT_EQ(body, reply.SerializeAsString());
  EXPECT_TRUE(AnswerMacValid(key, body, mac));
  EXPECT_FALSE(AnswerMacValid(NewAnswerKey(), body, mac));
  EXPECT_FALSE(AnswerMacValid("", body, mac));
  // One changed byte of the answer (closed 3 -> 4): the MAC no longer holds.
  std::string tampered(body);
  tampered[tampered.size() - 1] = 4;
  EXPECT_FALSE(AnswerMacValid(key, tampered, mac));
}

TEST(AnswerMac, AnUnsignedAnswerHasNoMac) {
  v1::BusReply reply;
  reply.set_gateway_id("gw-1");
  std::string_view body, mac;
  EXPECT_FALSE(SplitSignedAnswer(reply.SerializeAsString(), &body, &mac));
  EXPECT_TRUE(mac.empty());
  EXPECT_FALSE(SplitSignedAnswer("", &body, &mac));
}

}  // namespace
}  // namespace switchboard
