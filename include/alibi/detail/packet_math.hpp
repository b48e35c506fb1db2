#pragma once
// The few vector operations of the softmax step that Eigen's packet math does not give as is:
// an exp whose result is exactly 0 below the normal range (masked logits are -inf, and Eigen's
// exp does not return 0 for -inf on every instruction set), with a scalar branch for builds where
// Eigen does not vectorise, the reductions of the decode walk, and compiler hints. Raw
// intrinsics and GNU extensions live here only, each behind its #if with a portable version.

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

/// `x`, which the compiler must now hold in a register: loaded once rather than folded into
/// each of its uses (a packet used by several FMAs would otherwise be read from L1 by each).
/// Elsewhere (other compilers, scalar builds) it is x as it is.
template <class Packet>
Packet in_register(Packet x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  if constexpr (!std::is_arithmetic<Packet>::value) __asm__("" : "+v"(x));
#elif defined(__GNUC__) && defined(__aarch64__)
  if constexpr (!std::is_arithmetic<Packet>::value) __asm__("" : "+w"(x));
#endif
  return x;
}

/// Asks for the cache line at `address` ahead of its use (a hint: nothing where the compiler
/// has no prefetch builtin).
inline void prefetch_line(const void* address) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(address);
#else
  (void)address;
#endif
}

#ifdef EIGEN_VECTORIZE_AVX512
/// The horizontal sums of 16 packets of 16 floats as one packet: lane 4a + b holds the sum of
/// v[4b + a]. Four levels of shuffles and adds (halves, quarters, pairs, lanes) instead of sixteen
/// reductions, for blocks of dot products.
EIGEN_ALWAYS_INLINE Eigen::internal::Packet16f transposed_sums(
    const Eigen::internal::Packet16f (&v)[16]) {
  Eigen::internal::Packet16f halves[8], quarters[4], pairs[2];
  for (int i = 0; i < 8; ++i)
    halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                              _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
  for (int i = 0; i < 4; ++i)
    quarters[i] = _mm512_add_ps(_mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], 0x88),
                                _mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; ++i)
    pairs[i] = _mm512_add_ps(_mm512_shuffle_ps(quarters[2 * i], quarters[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(quarters[2 * i], quarters[2 * i + 1], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_ps(pairs[0], pairs[1], 0x88),
                       _mm512_shuffle_ps(pairs[0], pairs[1], 0xDD));
}
#endif

/// sums[r * stride + j] = the horizontal sum of acc[r][j]. Always inlined: called out of line, it
/// takes acc by address, and GCC then keeps the caller's accumulators in memory, storing each
/// after every FMA of the dot products (measured: half the decode walk's samples on those stores).
template <class Packet, int R, int S>
EIGEN_ALWAYS_INLINE void store_sums(const Packet (&acc)[R][S], packet_scalar<Packet>* sums,
                                    index_t stride) {
  using namespace Eigen::internal;
#ifdef EIGEN_VECTORIZE_AVX512
  if constexpr (R * S == 16 && unpacket_traits<Packet>::size == 16 &&
                std::is_same<packet_scalar<Packet>, float>::value) {
    Packet16f v[16];
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < S; ++j) {
        const int lane = r * S + j;  // row r's sums end up side by side
        v[4 * (lane % 4) + lane / 4] = acc[r][j];
      }
    alignas(64) float lanes[16];
    pstore(lanes, transposed_sums(v));
    for (int r = 0; r < R; ++r) std::copy_n(lanes + r * S, S, sums + r * stride);
    return;
  }
#endif
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < S; ++j) sums[r * stride + j] = predux(acc[r][j]);
}

}  // namespace detail
}  // namespace alibi
