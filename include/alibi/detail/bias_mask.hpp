#pragma once
// The epilogue every scores product shares: the ALiBi bias and the mask of a packet of logits.
// A tile's key columns c are integers relative to its first key; a row's distance to column c is
// |d0 - c|, d0 being the row's distance to the tile's first key with the row's bias offset taken
// out (Geometry::bias_offset). The prefill and backward tiles hold query rows in the lanes (d0,
// the slope and the allowed columns per lane, the column broadcast); the decode walk holds keys
// in the lanes (the row's values broadcast, the columns c0 + lane). Both are this formula.

#include <algorithm>
#include <limits>

#include <Eigen/Core>

#include "../tensor_view.hpp"
#include "kernel_traits.hpp"
#include "packet_math.hpp"

namespace alibi {
namespace detail {

/// A key bound relative to a tile's first key t0, clamped to a little beyond the tile so that it
/// converts to Scalar exactly (tiles are far shorter than 2^24 keys).
template <class Scalar>
Scalar tile_column(index_t key, index_t t0, index_t tile) {
  return Scalar(std::min(std::max<index_t>(key - t0, -1), tile + 1));
}

/// Templated on the scalar (a class template of a vector type would lose its attributes): the
/// packets are the kernels' (kernel_traits).
template <class Scalar>
struct BiasMask {
  using Packet = typename kernel_traits<Scalar>::Packet;
  Packet d0;           // distance to column 0, the bias offset taken out
  Packet minus_slope;  // -m
  Packet lo, hi;       // the allowed columns [lo, hi)

  /// One row's values in every lane (the decode walk's layout).
  static BiasMask broadcast(Scalar d0, Scalar slope, Scalar lo, Scalar hi) {
    using namespace Eigen::internal;
    return {pset1<Packet>(d0), pset1<Packet>(-slope), pset1<Packet>(lo), pset1<Packet>(hi)};
  }
  /// A packet of rows' values from per-row arrays (the tiles' layout).
  static BiasMask load(const Scalar* d0, const Scalar* minus_slope, const Scalar* lo,
                       const Scalar* hi) {
    using namespace Eigen::internal;
    return {pload<Packet>(d0), pload<Packet>(minus_slope), pload<Packet>(lo), pload<Packet>(hi)};
  }

  /// |d0 - c|: exact, since both are small integers.
  Packet distance(const Packet& column) const {
    using namespace Eigen::internal;
    return pabs(psub(d0, column));
  }
  /// score - m |d0 - c| (the bias after the scale, as FlashAttention adds it), and -inf where c
  /// is outside [lo, hi) when `masked` (only edge tiles need the mask).
  Packet operator()(const Packet& score, const Packet& column, bool masked) const {
    using namespace Eigen::internal;
    const Packet logit = pmadd(distance(column), minus_slope, score);
    if (!masked) return logit;
    const Packet outside = por(pcmp_lt(column, lo), pcmp_le(hi, column));
    return pselect(outside, pset1<Packet>(-std::numeric_limits<Scalar>::infinity()), logit);
  }
};

}  // namespace detail
}  // namespace alibi
