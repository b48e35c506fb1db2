#pragma once
// The two register-blocked products of a tile: scores = Q Kᵀ and output += P V. Each computes a
// micro-tile of MR rows by NP packets with the accumulators in vector registers, broadcasting one
// scalar of the left operand per row and loading NP packets of the packed right operand per step.
// Operands are packed by the caller: rows of `lhs` with stride lhs_stride, `rhs` as depth rows of
// NP * width contiguous values (stride rhs_stride), all aligned to the packet size.

#include <Eigen/Core>

#include "../tensor_view.hpp"

namespace alibi {
namespace detail {

/// out[i][j] (+)= sum_d lhs[i][d] * rhs[d][j] for i < MR, j < NP * width. With accumulate, `out`
/// is read first; otherwise it is overwritten.
template <class Packet, int MR, int NP, bool accumulate>
inline void micro_tile(const typename Eigen::internal::unpacket_traits<Packet>::type* lhs,
                       index_t lhs_stride,
                       const typename Eigen::internal::unpacket_traits<Packet>::type* rhs,
                       index_t rhs_stride, index_t depth,
                       typename Eigen::internal::unpacket_traits<Packet>::type* out,
                       index_t out_stride) {
  using namespace Eigen::internal;
  constexpr int width = unpacket_traits<Packet>::size;
  Packet acc[MR][NP];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NP; ++j)
      acc[i][j] = accumulate ? pload<Packet>(out + i * out_stride + j * width) : pzero(acc[i][j]);
  for (index_t d = 0; d < depth; ++d) {
    Packet b[NP];
    for (int j = 0; j < NP; ++j) b[j] = pload<Packet>(rhs + d * rhs_stride + j * width);
    for (int i = 0; i < MR; ++i) {
      const Packet a = pset1<Packet>(lhs[i * lhs_stride + d]);
      for (int j = 0; j < NP; ++j) acc[i][j] = pmadd(a, b[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NP; ++j) pstore(out + i * out_stride + j * width, acc[i][j]);
}

/// out (+)= lhs rhs over `rows` (a multiple of MR) and `packets` packets of columns, in
/// micro-tiles of up to NP packets.
template <class Packet, int MR, int NP, bool accumulate>
void tile_product(const typename Eigen::internal::unpacket_traits<Packet>::type* lhs,
                  index_t lhs_stride, index_t rows,
                  const typename Eigen::internal::unpacket_traits<Packet>::type* rhs,
                  index_t rhs_stride, index_t depth, index_t packets,
                  typename Eigen::internal::unpacket_traits<Packet>::type* out,
                  index_t out_stride) {
  constexpr int width = Eigen::internal::unpacket_traits<Packet>::size;
  for (index_t j0 = 0; j0 < packets; j0 += NP) {
    const index_t column = j0 * width;
    const index_t n = packets - j0 < NP ? packets - j0 : NP;
    for (index_t i0 = 0; i0 < rows; i0 += MR) {
      const auto* l = lhs + i0 * lhs_stride;
      auto* o = out + i0 * out_stride + column;
      const auto* r = rhs + column;
      // The narrower remainder of a row of packets gets micro-tiles of its own width.
      if (n == NP)
        micro_tile<Packet, MR, NP, accumulate>(l, lhs_stride, r, rhs_stride, depth, o, out_stride);
      else if (n == 3)
        micro_tile<Packet, MR, 3, accumulate>(l, lhs_stride, r, rhs_stride, depth, o, out_stride);
      else if (n == 2)
        micro_tile<Packet, MR, 2, accumulate>(l, lhs_stride, r, rhs_stride, depth, o, out_stride);
      else
        micro_tile<Packet, MR, 1, accumulate>(l, lhs_stride, r, rhs_stride, depth, o, out_stride);
    }
  }
}

}  // namespace detail
}  // namespace alibi
