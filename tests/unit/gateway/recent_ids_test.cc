#include "gateway/recent_ids.h"

#include <string>

#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1800000000);

TEST(RecentIds, AnIdIsRunOnceWithinItsWindowWhateverCameBetween) {
  RecentIds ids;
  ASSERT_TRUE(ids.FirstTime("a", kT0, absl::Seconds(5)));
  // A storm between the first hearing and the re-ask: far more than the
  // 4,096 IDs the window used to be.
  for (int i = 0; i < 100000; ++i) {
    ASSERT_TRUE(ids.FirstTime("x" + std::to_string(i), kT0 + absl::Microseconds(40 * i), absl::Seconds(1)));
  }
  EXPECT_FALSE(ids.FirstTime("a", kT0 + absl::Milliseconds(4999), absl::Seconds(5)));
  EXPECT_EQ(ids.evicted_early(), 0u);
}

TEST(RecentIds, IdsGoWhenTheirWindowEnds) {
  RecentIds ids;
  ASSERT_TRUE(ids.FirstTime("a", kT0, absl::Seconds(1)));
  ASSERT_TRUE(ids.FirstTime("b", kT0, absl::Seconds(10)));
  EXPECT_EQ(ids.size(), 2u);
  // "a"'s window is over: it goes (and may be heard as new: its sender
  // cannot ask it again any more).
  EXPECT_TRUE(ids.FirstTime("c", kT0 + absl::Seconds(2), absl::Seconds(1)));
  EXPECT_FALSE(ids.FirstTime("b", kT0 + absl::Seconds(3), absl::Seconds(10)));
  EXPECT_EQ(ids.size(), 2u);  // b, c
  EXPECT_TRUE(ids.FirstTime("d", kT0 + absl::Seconds(11), absl::Seconds(1)));
  EXPECT_EQ(ids.size(), 1u);
}

TEST(RecentIds, AShortWindowBehindALongOneIsKeptLongerNeverShorter) {
  RecentIds ids;
  ASSERT_TRUE(ids.FirstTime("long", kT0, absl::Seconds(10)));
  ASSERT_TRUE(ids.FirstTime("short", kT0, absl::Seconds(1)));
  EXPECT_FALSE(ids.FirstTime("short", kT0 + absl::Milliseconds(900), absl::Seconds(1)));
  EXPECT_FALSE(ids.FirstTime("long", kT0 + absl::Seconds(9), absl::Seconds(10)));
}

TEST(RecentIds, BoundedOldestFirstAndCounted) {
  RecentIds ids(3);
  for (const char* id : {"a", "b", "c", "d"}) ASSERT_TRUE(ids.FirstTime(id, kT0, absl::Seconds(60)));
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids.evicted_early(), 1u);
  EXPECT_FALSE(ids.FirstTime("d", kT0, absl::Seconds(60)));
  EXPECT_TRUE(ids.FirstTime("a", kT0, absl::Seconds(60)));  // let go early: the count says so
}

}  // namespace
}  // namespace switchboard::gateway
