#pragma once
// 64-bit products and sums that report overflow instead of wrapping (undefined for signed
// integers): the validation of sizes and strides. GCC and clang have a builtin for it; other
// compilers get the portable version beside it, which the tests hold against the builtin.

#include <limits>

#include "../tensor_view.hpp"

namespace alibi {
namespace detail {

namespace portable {
/// Whether a * b overflows index_t; if not, *result = a * b. Divides instead of multiplying.
inline bool mul_overflows(index_t a, index_t b, index_t* result) {
  constexpr index_t hi = std::numeric_limits<index_t>::max();
  constexpr index_t lo = std::numeric_limits<index_t>::min();
  bool overflows;
  if (a > 0)
    overflows = b > 0 ? a > hi / b : b < lo / a;
  else if (b > 0)
    overflows = a < lo / b;
  else
    overflows = a != 0 && b < hi / a;
  if (!overflows) *result = a * b;
  return overflows;
}
/// Whether a + b overflows index_t; if not, *result = a + b.
inline bool add_overflows(index_t a, index_t b, index_t* result) {
  constexpr index_t hi = std::numeric_limits<index_t>::max();
  constexpr index_t lo = std::numeric_limits<index_t>::min();
  const bool overflows = b > 0 ? a > hi - b : a < lo - b;
  if (!overflows) *result = a + b;
  return overflows;
}
}  // namespace portable

/// Whether a * b overflows index_t; if not, *result = a * b.
inline bool mul_overflows(index_t a, index_t b, index_t* result) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_mul_overflow(a, b, result);
#else
  return portable::mul_overflows(a, b, result);
#endif
}
/// Whether a + b overflows index_t; if not, *result = a + b.
inline bool add_overflows(index_t a, index_t b, index_t* result) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_add_overflow(a, b, result);
#else
  return portable::add_overflows(a, b, result);
#endif
}

}  // namespace detail
}  // namespace alibi
