// The portable overflow checks (what compilers without GCC's builtins use) against the builtins,
// on the edges of int64 where they differ from plain arithmetic.
#include <alibi/detail/overflow.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <vector>

using alibi::index_t;

TEST_CASE("the portable overflow checks agree with the builtins at the edges of int64") {
  constexpr index_t hi = std::numeric_limits<index_t>::max();
  constexpr index_t lo = std::numeric_limits<index_t>::min();
  const std::vector<index_t> values{0,
                                    1,
                                    -1,
                                    2,
                                    -2,
                                    3,
                                    -3,
                                    hi,
                                    hi - 1,
                                    hi / 2,
                                    hi / 2 + 1,
                                    lo,
                                    lo + 1,
                                    lo / 2,
                                    lo / 2 - 1,
                                    3037000499,
                                    3037000500,
                                    -3037000499,
                                    -3037000500,
                                    index_t(1) << 32,
                                    -(index_t(1) << 32)};
  int overflows = 0;
  for (index_t a : values)
    for (index_t b : values) {
      INFO("a = " << a << ", b = " << b);
      index_t product = 7, sum = 7, portable_product = 7, portable_sum = 7;
      const bool mul = __builtin_mul_overflow(a, b, &product);
      const bool add = __builtin_add_overflow(a, b, &sum);
      REQUIRE(alibi::detail::portable::mul_overflows(a, b, &portable_product) == mul);
      REQUIRE(alibi::detail::portable::add_overflows(a, b, &portable_sum) == add);
      if (!mul) CHECK(portable_product == product);
      if (!add) CHECK(portable_sum == sum);
      // What the library calls is the same as either.
      index_t chosen = 7;
      CHECK(alibi::detail::mul_overflows(a, b, &chosen) == mul);
      overflows += mul + add;
    }
  CHECK(overflows > 100);  // the edges were reached
}
