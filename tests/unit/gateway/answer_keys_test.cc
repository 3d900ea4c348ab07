#include "gateway/answer_keys.h"

#include <string>
#include <string_view>

#include "common/answer_mac.h"
#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

constexpr char kReplicaA[] = "_SB.test.control.a";
constexpr char kReplicaB[] = "_SB.test.control.b";

bool SignedWith(const std::string& key, const std::string& data, const std::string& body) {
  std::string_view b, mac;
  return SplitSignedAnswer(data, &b, &mac) && b == body && AnswerMacValid(key, b, mac);
}

TEST(AnswerKeys, UnsignedWhileSigningIsOff) {
  AnswerKeys keys;
  std::string data = "answer";
  EXPECT_FALSE(keys.Sign(kReplicaA, &data, absl::Now()));
  EXPECT_EQ(data, "answer");
  EXPECT_EQ(keys.held(), 0u);
}

TEST(AnswerKeys, SignsWithTheAskingReplicasKey) {
  AnswerKeys keys;
  keys.set_signing(true);
  const std::string ka = NewAnswerKey(), kb = NewAnswerKey();
  const absl::Time now = absl::Now();
  EXPECT_TRUE(keys.Set(kReplicaA, ka, now).empty());
  EXPECT_TRUE(keys.Set(kReplicaB, kb, now).empty());
  std::string a = "to a", b = "to b";
  EXPECT_TRUE(keys.Sign(kReplicaA, &a, now));
  EXPECT_TRUE(keys.Sign(kReplicaB, &b, now));
  EXPECT_TRUE(SignedWith(ka, a, "to a"));
  EXPECT_TRUE(SignedWith(kb, b, "to b"));
  EXPECT_FALSE(SignedWith(kb, a, "to a"));
}

// A request that overtook the replica's welcome: its answer goes unsigned
// and is kept until the key comes, then handed back signed, in order;
// another replica's stays kept.
TEST(AnswerKeys, AnAnswerBeforeTheWelcomeIsHeldUntilTheKeyComes) {
  AnswerKeys keys;
  keys.set_signing(true);
  const absl::Time now = absl::Now();
  std::string one = "one", two = "two", other = "other";
  EXPECT_FALSE(keys.Sign(kReplicaA, &one, now));
  EXPECT_FALSE(keys.Sign(kReplicaB, &other, now));
  EXPECT_FALSE(keys.Sign(kReplicaA, &two, now));
  EXPECT_EQ(one, "one");  // sent as it is
  EXPECT_EQ(keys.held(), 3u);
  const std::string ka = NewAnswerKey();
  auto ready = keys.Set(kReplicaA, ka, now + absl::Milliseconds(3));
  ASSERT_EQ(ready.size(), 2u);
  EXPECT_TRUE(SignedWith(ka, ready[0], "one"));
  EXPECT_TRUE(SignedWith(ka, ready[1], "two"));
  EXPECT_EQ(keys.held(), 1u);
  EXPECT_EQ(keys.held_total(), 3u);
  // Once the key is in, answers are signed at once.
  std::string three = "three";
  EXPECT_TRUE(keys.Sign(kReplicaA, &three, now));
  EXPECT_TRUE(SignedWith(ka, three, "three"));
}

TEST(AnswerKeys, HeldAnswersExpireAndAreBounded) {
  AnswerKeys keys;
  keys.set_signing(true);
  const absl::Time now = absl::Now();
  std::string late = "late";
  EXPECT_FALSE(keys.Sign(kReplicaA, &late, now));
  EXPECT_EQ(keys.held(), 1u);
  // The key comes after the hold: the caller has long been answered
  // without this gateway; nothing is sent.
  EXPECT_TRUE(keys.Set(kReplicaA, NewAnswerKey(), now + AnswerKeys::kHoldFor + absl::Seconds(1)).empty());
  EXPECT_EQ(keys.held(), 0u);
  // A replica that never welcomes this gateway: bounded by bytes.
  std::string big(AnswerKeys::kMaxHeldBytes / 2 + 1, 'x');
  std::string copy = big;
  EXPECT_FALSE(keys.Sign(kReplicaB, &copy, now));
  EXPECT_EQ(keys.held(), 1u);
  copy = big;
  EXPECT_FALSE(keys.Sign(kReplicaB, &copy, now));
  EXPECT_EQ(keys.held(), 1u);  // no room for the second
  // Room again once the first expired.
  copy = big;
  EXPECT_FALSE(keys.Sign(kReplicaB, &copy, now + AnswerKeys::kHoldFor + absl::Seconds(1)));
  EXPECT_EQ(keys.held(), 1u);
  EXPECT_EQ(keys.held_total(), 3u);
}

}  // namespace
}  // namespace switchboard::gateway
