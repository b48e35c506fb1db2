#pragma once
// The register-blocked product behind both products of a tile, scoresᵀ = K Qᵀ and
// output += P V: a micro-tile of MR rows by NP packets of accumulators held in vector registers,
// broadcasting one scalar of the left operand per row and loading NP packets of the right operand
// per step of the depth. The left operand is read through strides, so P can be read out of the
// transposed scores and K straight out of the caller's tensor; the right operand is rows of
// whole packets (unaligned loads: value rows may be read in place too).

#include <Eigen/Core>

#include "../tensor_view.hpp"

namespace alibi {
namespace detail {

/// A left operand: element (i, d) at data[i * row_stride + d * depth_stride].
template <class Scalar>
struct StridedOperand {
  const Scalar* data;
  index_t row_stride, depth_stride;
};

/// Stores a finished micro-tile as it is.
struct StoreTile {
  template <int MR, int NP, class Packet, class Scalar>
  void operator()(Packet (&acc)[MR][NP], Scalar* out, index_t out_stride, index_t /*row*/,
                  index_t /*packet*/) const {
    constexpr int width = Eigen::internal::unpacket_traits<Packet>::size;
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NP; ++j)
        Eigen::internal::pstore(out + i * out_stride + j * width, acc[i][j]);
  }
};

/// acc[i][j] = sum_d lhs(i, d) * rhs[d][j] (plus out[i][j] with accumulate) for i < MR and
/// j < NP packets, then finish(acc, out, out_stride, row, packet) writes it: row and packet
/// locate the micro-tile in the whole product, for finishing steps that depend on them.
// Kept out of line: inlined into the task loop, its accumulators no longer get registers.
template <class Packet, int MR, int NP, bool accumulate, class Scalar, class Finish>
EIGEN_DONT_INLINE void micro_tile(StridedOperand<Scalar> lhs, const Scalar* rhs, index_t rhs_stride,
                                  index_t depth, Scalar* out, index_t out_stride,
                                  const Finish& finish, index_t row, index_t packet) {
  using namespace Eigen::internal;
  constexpr int width = unpacket_traits<Packet>::size;
  Packet acc[MR][NP];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NP; ++j)
      acc[i][j] = accumulate ? pload<Packet>(out + i * out_stride + j * width) : pset1<Packet>(0);
  const Scalar* l = lhs.data;
  for (index_t d = 0; d < depth; ++d, l += lhs.depth_stride, rhs += rhs_stride) {
    Packet b[NP];
    for (int j = 0; j < NP; ++j) b[j] = ploadu<Packet>(rhs + j * width);
    for (int i = 0; i < MR; ++i) {
      const Packet a = pset1<Packet>(l[i * lhs.row_stride]);
      for (int j = 0; j < NP; ++j) acc[i][j] = pmadd(a, b[j], acc[i][j]);
    }
  }
  finish(acc, out, out_stride, row, packet);
}

/// out (+)= lhs rhs for `rows` rows (a multiple of MR) and `packets` packets of columns, in
/// micro-tiles of up to NP packets, each written by `finish` (see micro_tile).
template <class Packet, int MR, int NP, bool accumulate, class Scalar, class Finish = StoreTile>
void tile_product(StridedOperand<Scalar> lhs, index_t rows, const Scalar* rhs, index_t rhs_stride,
                  index_t depth, index_t packets, Scalar* out, index_t out_stride,
                  const Finish& finish = {}) {
  constexpr int width = Eigen::internal::unpacket_traits<Packet>::size;
  for (index_t j0 = 0; j0 < packets; j0 += NP) {
    const index_t n = packets - j0 < NP ? packets - j0 : NP;
    const Scalar* r = rhs + j0 * width;
    for (index_t i0 = 0; i0 < rows; i0 += MR) {
      const StridedOperand<Scalar> l{lhs.data + i0 * lhs.row_stride, lhs.row_stride,
                                     lhs.depth_stride};
      Scalar* o = out + i0 * out_stride + j0 * width;
      // The narrower remainder of a row of packets gets micro-tiles of its own width.
      if (n == NP)
        micro_tile<Packet, MR, NP, accumulate>(l, r, rhs_stride, depth, o, out_stride, finish, i0,
                                               j0);
      else if (n == 3)
        micro_tile<Packet, MR, 3, accumulate>(l, r, rhs_stride, depth, o, out_stride, finish, i0,
                                              j0);
      else if (n == 2)
        micro_tile<Packet, MR, 2, accumulate>(l, r, rhs_stride, depth, o, out_stride, finish, i0,
                                              j0);
      else
        micro_tile<Packet, MR, 1, accumulate>(l, r, rhs_stride, depth, o, out_stride, finish, i0,
                                              j0);
    }
  }
}

}  // namespace detail
}  // namespace alibi
