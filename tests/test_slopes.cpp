// Slopes against the closed form of Press et al., computed here independently in long double.
#include <alibi/slopes.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <stdexcept>
#include <vector>

namespace {

// The schedule written from the paper's description: a geometric sequence starting at
// 2^(-max_bias / n) with that ratio for n a power of two; otherwise the sequence of the largest
// power of two below H, then every other element of the sequence for twice that.
std::vector<long double> closed_form(int heads, long double max_bias) {
  const auto geometric = [&](int n) {
    std::vector<long double> s;
    const long double start = std::pow(2.0L, -max_bias / n);
    long double x = start;
    for (int i = 0; i < n; ++i, x *= start) s.push_back(x);
    return s;
  };
  int c = 1;
  while (2 * c <= heads) c *= 2;
  std::vector<long double> result = geometric(c);
  const std::vector<long double> doubled = geometric(2 * c);
  for (int i = 0; static_cast<int>(result.size()) < heads; i += 2) result.push_back(doubled[i]);
  return result;
}

}  // namespace

TEST_CASE("slopes follow the closed form for 1..128 heads and several max_bias", "[slopes]") {
  for (float max_bias : {8.0f, 1.0f, 4.0f, 16.0f, 0.5f}) {
    for (int heads = 1; heads <= 128; ++heads) {
      const std::vector<float> s = alibi::slopes(heads, max_bias);
      const std::vector<long double> expected = closed_form(heads, max_bias);
      REQUIRE(s.size() == static_cast<std::size_t>(heads));
      for (int h = 0; h < heads; ++h) {
        INFO("max_bias " << max_bias << ", heads " << heads << ", head " << h);
        // One rounding to float: within half an ulp, i.e. 2^-24 relative.
        CHECK(std::fabs(s[h] - expected[h]) <= expected[h] * 0x1p-24L);
        CHECK(alibi::slope(h, heads, max_bias) == s[h]);
      }
    }
  }
}

TEST_CASE("slopes of well-known models", "[slopes]") {
  // 8 heads: 1/2, 1/4, ..., 1/256, exactly representable.
  const std::vector<float> eight = alibi::slopes(8);
  for (int h = 0; h < 8; ++h) CHECK(eight[h] == std::ldexp(1.0f, -(h + 1)));
  // 12 heads (BLOOM-560m style): slopes(8), then odd powers of 2^-0.5 from slopes(16).
  const std::vector<float> twelve = alibi::slopes(12);
  for (int h = 0; h < 8; ++h) CHECK(twelve[h] == eight[h]);
  for (int j = 0; j < 4; ++j)
    CHECK(twelve[8 + j] == static_cast<float>(std::exp2(-(2.0 * j + 1) * 0.5)));
}

TEST_CASE("a head shard gets the slopes of its global head indices", "[slopes]") {
  const std::vector<float> all = alibi::slopes(48);
  const std::vector<float> shard = alibi::slopes(48, 16, 12);
  REQUIRE(shard.size() == 12);
  for (int j = 0; j < 12; ++j) CHECK(shard[j] == all[16 + j]);
  // The shard is not the slopes of a smaller model.
  CHECK(shard != alibi::slopes(12));
  CHECK(alibi::slopes(48, 48, 0).empty());
  CHECK(alibi::slopes(20, 0, 20, 4.0f) == alibi::slopes(20, 4.0f));
}

TEST_CASE("slopes reject impossible arguments", "[slopes][validation]") {
  CHECK_THROWS_WITH(alibi::slopes(0), Catch::Contains("num_heads") && Catch::Contains("0"));
  CHECK_THROWS_AS(alibi::slopes(-3), std::invalid_argument);
  CHECK_THROWS_WITH(alibi::slope(8, 8), Catch::Contains("head 8") && Catch::Contains("[0, 8)"));
  CHECK_THROWS_AS(alibi::slope(-1, 8), std::invalid_argument);
  CHECK_THROWS_WITH(alibi::slopes(8, std::nanf("")), Catch::Contains("max_bias"));
  CHECK_THROWS_AS(alibi::slopes(8, INFINITY), std::invalid_argument);
  CHECK_THROWS_WITH(alibi::slopes(32, 30, 4), Catch::Contains("[30") && Catch::Contains("32"));
  CHECK_THROWS_AS(alibi::slopes(32, -1, 4), std::invalid_argument);
  CHECK_THROWS_AS(alibi::slopes(32, 0, -1), std::invalid_argument);
}
