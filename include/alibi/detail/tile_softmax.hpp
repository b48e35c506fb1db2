#pragma once
// The online softmax of one task's block of query rows over its key tiles (FlashAttention's),
// with the ALiBi bias: per row its position, allowed keys and slope; per tile the distances, the
// mask, the range of keys each group of rows can attend, and the rows' max over the tile
// (folded in by the scores micro-tiles, see Finish); across tiles the running max and sum and the
// rescaling of the output rows.

#include <algorithm>
#include <limits>
#include <vector>

#include <Eigen/Core>

#include "bias_mask.hpp"
#include "geometry.hpp"
#include "kernel_traits.hpp"
#include "packet_math.hpp"
#include "scratch.hpp"

namespace alibi {
namespace detail {

template <class Acc>
class TileSoftmax {
  using Traits = kernel_traits<Acc>;
  using Packet = typename Traits::Packet;
  static constexpr index_t W = Traits::width, MR = Traits::micro_rows, KB = Traits::key_block;

 public:
  /// Rows that share one range of keys per tile: whole packets (for the softmax) and whole
  /// micro-tile rows (for the P V product).
  static constexpr index_t group_rows = W > MR ? W : MR;

  explicit TileSoftmax(index_t capacity)
      : distance_(std::size_t(capacity)),
        minus_slope_(distance_.size()),
        first_(distance_.size()),
        last_(distance_.size()),
        tile_max_(distance_.size()),
        max_(distance_.size()),
        sum_(distance_.size()),
        factor_(distance_.size()),
        positions_(distance_.size()),
        offsets_(distance_.size(), 0),
        keys_(distance_.size()),
        edge_(std::size_t(capacity / W)),
        group_keys_(std::size_t(capacity / group_rows)) {}

  /// Row r is a query at `position` that may attend `keys`, with slope `slope`; rows past the
  /// task's (padding) get no keys.
  /// `offset`: Geometry::bias_offset, the distance taken out of this row's bias.
  void set_row(index_t r, index_t position, KeyRange keys, Acc slope, index_t offset = 0) {
    positions_[r] = position;
    offsets_[r] = offset;
    keys_[r] = keys;
    minus_slope_[r] = -slope;
    max_[r] = -std::numeric_limits<Acc>::infinity();
    sum_[r] = Acc(0);
  }
  void clear_row(index_t r) { set_row(r, 0, KeyRange{}, Acc(0)); }

  const KeyRange& keys(index_t r) const { return keys_[r]; }
  index_t position(index_t r) const { return positions_[r]; }
  /// The distance taken out of row r's bias (the true logits are lower by slope x |offset|).
  index_t offset(index_t r) const { return offsets_[r]; }
  Acc slope(index_t r) const { return -minus_slope_[r]; }

  /// Per row, for keys [t0, t0 + cols) at positions from first_key_position: the distance of the
  /// tile's first key, the allowed columns, whether each packet of rows needs the mask, the
  /// columns each group of rows can attend, and a fresh tile max. Distances stay exact integers
  /// until here and are exact in Acc below 2^24 (float); columns are clamped to a little beyond
  /// the tile, which keeps them exact too.
  void prepare(index_t rows, index_t t0, index_t cols, index_t first_key_position) {
    // The scores product covers whole micro-tiles of keys: columns past `cols` need the mask.
    const index_t covered = (cols + MR - 1) / MR * MR;
    const index_t padded = (rows + group_rows - 1) / group_rows * group_rows;
    for (index_t r = 0; r < padded; ++r) {
      const KeyRange keys = keys_[r];
      distance_[r] = keys.empty() ? Acc(0) : Acc(positions_[r] - first_key_position - offsets_[r]);
      // Keys past the tile are not in it: columns [cols, covered) hold no key of this tile (their
      // rows in the key buffer are stale) and must be masked even for rows that attend further.
      const index_t end = std::min(keys.end, t0 + cols);
      first_[r] = tile_column<Acc>(keys.begin, t0, KB);
      last_[r] = tile_column<Acc>(end, t0, KB);
      tile_max_[r] = -std::numeric_limits<Acc>::infinity();
      if (r % W == 0) edge_[r / W] = false;
      if (keys.empty() || keys.begin > t0 || end < t0 + covered) edge_[r / W] = true;
      KeyRange& group = group_keys_[r / group_rows];
      if (r % group_rows == 0) group = KeyRange{cols, 0};
      const index_t column_begin = std::max<index_t>(keys.begin - t0, 0);
      const index_t column_end = std::min(keys.end - t0, cols);
      if (!keys.empty() && column_begin < column_end) {
        group.begin = std::min(group.begin, column_begin);
        group.end = std::max(group.end, column_end);
      }
    }
  }

  /// The tile's columns that rows [row, row + count) can attend (their groups' hull; empty when
  /// none can). Logits outside it are neither computed nor read.
  KeyRange columns(index_t row, index_t count) const {
    KeyRange hull{std::numeric_limits<index_t>::max(), 0};
    for (index_t g = row / group_rows; g * group_rows < row + count; ++g) {
      hull.begin = std::min(hull.begin, group_keys_[g].begin);
      hull.end = std::max(hull.end, group_keys_[g].end);
    }
    return hull.empty() ? KeyRange{} : hull;
  }

  /// The bias and mask of the packet of rows from r0 for this tile (prepare() sets them).
  BiasMask<Acc> bias_mask(index_t r0) const {
    return BiasMask<Acc>::load(&distance_[r0], &minus_slope_[r0], &first_[r0], &last_[r0]);
  }
  /// Whether the packet of rows from r0 needs the mask in this tile.
  bool edge(index_t r0) const { return edge_[r0 / W] != 0; }

  /// Finishes a micro-tile of scoresᵀ (keys by packets of query rows) in registers: the bias and
  /// the mask, stores the logits and folds them into each row's max over the tile.
  struct Finish {
    TileSoftmax* softmax;

    template <int MR_, int NP_>
    void operator()(Packet (&acc)[MR_][NP_], Acc* out, index_t out_stride, index_t key,
                    index_t packet) const {
      using namespace Eigen::internal;
      TileSoftmax& s = *softmax;
      for (int j = 0; j < NP_; ++j) {
        const index_t r0 = (packet + j) * W;
        const BiasMask<Acc> bias = s.bias_mask(r0);
        const bool masked = s.edge(r0);
        Acc* tile_max = &s.tile_max_[r0];
        Packet max = pload<Packet>(tile_max);
        for (int i = 0; i < MR_; ++i) {
          const Packet logit = bias(acc[i][j], pset1<Packet>(Acc(key + i)), masked);
          pstore(out + i * out_stride + j * W, logit);
          max = pmax<Eigen::PropagateNaN>(max, logit);  // a NaN logit poisons its row
        }
        pstore(tile_max, max);
      }
    }
  };
  Finish finish() { return Finish{this}; }

  /// Turns the tile's logits (scoresᵀ, row stride `stride`) into softmax weights against each
  /// row's running max, a packet of rows at a time, and rescales the output rows (row stride
  /// value_stride) whose max grew.
  void normalize(index_t rows, Acc* scores, index_t stride, Acc* output, index_t value_stride) {
    using namespace Eigen::internal;
    const Packet minus_inf = pset1<Packet>(-std::numeric_limits<Acc>::infinity());
    const index_t packets = (rows + W - 1) / W;
    for (index_t j = 0; j < packets; ++j) {
      const index_t r0 = j * W;
      const Packet old_max = pload<Packet>(&max_[r0]);
      const Packet new_max = pmax<Eigen::PropagateNaN>(old_max, pload<Packet>(&tile_max_[r0]));
      // Rows that have seen no allowed key keep max -inf: shift by 0 so -inf - -inf is not NaN.
      const Packet shift = pselect(pcmp_eq(new_max, minus_inf), pset1<Packet>(Acc(0)), new_max);
      const Packet factor = exp_weight(psub(old_max, shift));
      const KeyRange cols = group_keys_[r0 / group_rows];
      const Packet total = exp_and_sum(scores + r0, stride, cols, shift);
      pstore(&sum_[r0], padd(pmul(pload<Packet>(&sum_[r0]), factor), total));
      pstore(&max_[r0], new_max);
      pstore(&factor_[r0], factor);
    }
    for (index_t r = 0; r < rows; ++r) {
      if (factor_[r] == Acc(1)) continue;
      Acc* o = output + r * value_stride;
      const Packet factor = pset1<Packet>(factor_[r]);
      for (index_t d = 0; d < value_stride; d += W)
        pstore(o + d, pmul(pload<Packet>(o + d), factor));
    }
  }

  /// Row r's running sum of exp(logit - max) and its running max.
  Acc sum(index_t r) const { return sum_[r]; }
  Acc max(index_t r) const { return max_[r]; }
  /// For walks that keep them elsewhere while they run (the decode walk).
  void set_running(index_t r, Acc max, Acc sum) {
    max_[r] = max;
    sum_[r] = sum;
  }

 private:
  /// Replaces the logits of one packet of rows over `cols` by exp(logit - shift); returns their
  /// sum. Four independent sums: one would wait on its own latency at every key.
  static Packet exp_and_sum(Acc* scores, index_t stride, KeyRange cols, const Packet& shift) {
    using namespace Eigen::internal;
    const auto weight = [&](index_t c) {
      Acc* s = scores + c * stride;
      const Packet w = exp_weight(psub(pload<Packet>(s), shift));
      pstore(s, w);
      return w;
    };
    Packet s0 = pset1<Packet>(Acc(0)), s1 = s0, s2 = s0, s3 = s0;
    index_t c = cols.begin;
    for (; c + 4 <= cols.end; c += 4) {
      s0 = padd(s0, weight(c));
      s1 = padd(s1, weight(c + 1));
      s2 = padd(s2, weight(c + 2));
      s3 = padd(s3, weight(c + 3));
    }
    for (; c < cols.end; ++c) s0 = padd(s0, weight(c));
    return padd(padd(s0, s1), padd(s2, s3));
  }

  // Per row (capacity rows).
  scratch_vector<Acc> distance_, minus_slope_, first_, last_, tile_max_, max_, sum_, factor_;
  std::vector<index_t> positions_, offsets_;
  std::vector<KeyRange> keys_;
  std::vector<char> edge_;            // per packet of rows: some lane needs the mask this tile
  std::vector<KeyRange> group_keys_;  // per group of rows: the columns it can attend this tile
};

}  // namespace detail
}  // namespace alibi
