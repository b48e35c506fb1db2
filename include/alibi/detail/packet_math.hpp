#pragma once
// The few vector operations of the softmax step that Eigen's packet math does not give as is:
// an exp whose result is exactly 0 below the normal range (masked logits are -inf, and Eigen's
// exp does not return 0 for -inf on every instruction set), and the mask of a key range.
// Each has a scalar branch for builds where Eigen does not vectorise.

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include "../tensor_view.hpp"

namespace alibi {
namespace detail {

template <class Packet>
using packet_scalar = typename Eigen::internal::unpacket_traits<Packet>::type;

/// exp(x), or exactly 0 where exp(x) is below the smallest normal number (x = -inf included).
/// NaN stays NaN.
template <class Packet>
Packet exp_weight(const Packet& x) {
  using Scalar = packet_scalar<Packet>;
  // log of the smallest normal: weights below it are 2^-126 (float) of the row's largest.
  const Scalar lowest =
      std::is_same<Scalar, float>::value ? Scalar(-87.33654475f) : Scalar(-708.3964185322641);
  if constexpr (std::is_arithmetic<Packet>::value) {
    return x < lowest ? Scalar(0) : std::exp(x);
  } else {
    using namespace Eigen::internal;
    return pselect(pcmp_lt(x, pset1<Packet>(lowest)), pzero(x), pexp(x));
  }
}

/// Lanes of `x` whose column index (first + lane) is outside [begin, end) become -inf.
template <class Packet>
Packet mask_outside(const Packet& x, index_t first, index_t begin, index_t end) {
  using Scalar = packet_scalar<Packet>;
  const Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  if constexpr (std::is_arithmetic<Packet>::value) {
    return first < begin || first >= end ? minus_inf : x;
  } else {
    using namespace Eigen::internal;
    // Column indices relative to `first` are small integers, exact in Scalar.
    const Packet column = plset<Packet>(Scalar(0));
    // Clamped to a few lanes around the packet so that the bounds convert to Scalar exactly.
    constexpr index_t width = unpacket_traits<Packet>::size;
    const auto relative = [&](index_t bound) {
      return Scalar(std::min<index_t>(std::max<index_t>(bound - first, -1), width + 1));
    };
    const Packet lo = pset1<Packet>(relative(begin)), hi = pset1<Packet>(relative(end));
    const Packet outside = por(pcmp_lt(column, lo), pcmp_le(hi, column));
    return pselect(outside, pset1<Packet>(minus_inf), x);
  }
}

}  // namespace detail
}  // namespace alibi
