#pragma once
// The register-blocked product behind both products of a tile, scoresᵀ = K Qᵀ and
// output += P V: a micro-tile of MR rows by NP packets of accumulators held in vector registers,
// broadcasting one scalar of the left operand per row and loading NP packets of the right operand
// per step of the depth. The left operand is read through strides, so P can be read out of the
// transposed scores and K straight out of the caller's tensor; the right operand is rows of
// whole packets (unaligned loads: value rows may be read in place too).

#include <Eigen/Core>

#include "../tensor_view.hpp"
#include "packet_math.hpp"

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
    for (int j = 0; j < NP; ++j) b[j] = in_register(ploadu<Packet>(rhs + j * width));
    for (int i = 0; i < MR; ++i) {
      const Packet a = pset1<Packet>(l[i * lhs.row_stride]);
      for (int j = 0; j < NP; ++j) acc[i][j] = pmadd(a, b[j], acc[i][j]);
    }
  }
  // finish takes the accumulators by reference; handing it a copy keeps `acc` itself out of
  // memory (clang otherwise stores half of it to the stack at every step of the loop).
  Packet result[MR][NP];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NP; ++j) result[i][j] = acc[i][j];
  finish(result, out, out_stride, row, packet);
}

/// One micro-tile of `packets` (1 to NP) packets: the narrower remainder of a row of packets gets
/// micro-tiles of its own width.
template <class Packet, int MR, int NP, bool accumulate, class Scalar, class Finish = StoreTile>
void micro_tile_columns(index_t packets, StridedOperand<Scalar> lhs, const Scalar* rhs,
                        index_t rhs_stride, index_t depth, Scalar* out, index_t out_stride,
                        const Finish& finish, index_t row, index_t packet) {
  if (packets == NP)
    micro_tile<Packet, MR, NP, accumulate>(lhs, rhs, rhs_stride, depth, out, out_stride, finish,
                                           row, packet);
  else if (packets == 3)
    micro_tile<Packet, MR, 3, accumulate>(lhs, rhs, rhs_stride, depth, out, out_stride, finish, row,
                                          packet);
  else if (packets == 2)
    micro_tile<Packet, MR, 2, accumulate>(lhs, rhs, rhs_stride, depth, out, out_stride, finish, row,
                                          packet);
  else
    micro_tile<Packet, MR, 1, accumulate>(lhs, rhs, rhs_stride, depth, out, out_stride, finish, row,
                                          packet);
}

}  // namespace detail
}  // namespace alibi
