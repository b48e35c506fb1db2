#pragma once
// The decode walk: a few query rows of one kv head (a decode step, up to max_rows of them)
// against its keys. The prefill tiles would use a fraction of each vector for the rows and read K
// a scalar at a time; this walk vectorises the scores over head_dim instead, streams each key and
// value row once in its storage format (converted in registers, kv_format.hpp), and asks for the
// rows ahead of their use: it is bound by memory latency otherwise, not by bandwidth.

#include <algorithm>
#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "bias_mask.hpp"
#include "geometry.hpp"
#include "kernel_traits.hpp"
#include "packet_math.hpp"
#include "scratch.hpp"
#include "tile_order.hpp"
#include "tile_softmax.hpp"

namespace alibi {
namespace detail {

template <class Source>
class DecodeWalk {
  using Format = typename Source::Format;
  using Storage = typename Format::Storage;
  using Rows = typename Source::Rows;
  using Acc = typename Format::Acc;
  using Traits = kernel_traits<Acc>;
  using Packet = typename Traits::Packet;
  static constexpr index_t W = Traits::width, KB = Traits::key_block;

 public:
  static constexpr index_t max_rows = 8;

  explicit DecodeWalk(const Geometry& g)
      : g_(g), queries_(std::size_t(max_rows * g.head_dim)), scores_(std::size_t(max_rows * KB)) {}

  /// Whether this walk can take `rows` query rows of a call: rows contiguous in whole packets.
  static bool fits(const Geometry& g, const Source& source, index_t rows) {
    return rows <= max_rows && source.contiguous() && g.head_dim % W == 0 && g.value_dim % W == 0;
  }

  /// Rows [0, rows) of `softmax` (positions, allowed keys, slopes and bias offsets; their running
  /// max and sum are kept there, for the caller's tail bound) against the keys of (b, kv) in
  /// `order`. Queries come transposed and scaled (queries_t[d * q_stride + r]); output row r
  /// (output + r * value_stride) accumulates sum exp(logit - max) v. After each tile,
  /// `negligible(order)` may end the walk. Returns the keys visited.
  template <class Negligible>
  index_t run(const Source& source, index_t b, index_t kv, index_t rows, TileOrder order,
              const Acc* queries_t, index_t q_stride, TileSoftmax<Acc>& softmax, Acc* output,
              index_t value_stride, Negligible&& negligible) {
    using namespace Eigen::internal;
    const index_t dim = g_.head_dim;
    const Acc minus_inf = -std::numeric_limits<Acc>::infinity();
    keys_ = source.keys(b, kv);
    values_ = source.values(b, kv);
    key_format_ = source.key_format();
    value_format_ = source.value_format();
    // Query rows contiguous; padding rows zero.
    for (index_t r = 0; r < max_rows; ++r)
      for (index_t d = 0; d < dim; ++d)
        queries_[r * dim + d] = r < rows ? queries_t[d * q_stride + r] : Acc(0);
    Acc max[max_rows], sum[max_rows];
    for (index_t r = 0; r < max_rows; ++r) max[r] = minus_inf, sum[r] = 0;
    index_t visited = 0;
    KeyRange tile;
    while (order.next(tile)) {
      const index_t t0 = tile.begin, cols = tile.end - tile.begin;
      // The tiles after this one in walk order, whose rows are asked for ahead.
      TileOrder peek = order;
      if (!peek.next(ahead_[0])) ahead_[0] = KeyRange{};
      if (!peek.next(ahead_[1])) ahead_[1] = KeyRange{};
      t0_ = t0;
      cols_ = cols;
      // Scores: several keys per step against every query row, each key row read once.
      if (rows <= 1)
        scores<1>(t0, cols);
      else if (rows <= 2)
        scores<2>(t0, cols);
      else if (rows <= 4)
        scores<4>(t0, cols);
      else
        scores<8>(t0, cols);
      // Bias, mask and the online softmax, per row over the tile's keys.
      for (index_t r = 0; r < max_rows; ++r) {
        Acc* s = scores_.data() + r * KB;
        if (r >= rows) {
          std::fill(s, s + KB, Acc(0));
          continue;
        }
        // Columns are exact integers in Acc; distances too, up to 2^24 keys between a row and
        // its nearest key in one task (float; a split decode's chunks hold 16384). Columns
        // outside the row's keys or past the tile are masked.
        const KeyRange keys = softmax.keys(r);
        const index_t end = std::min(keys.end, t0 + cols);
        const bool masked = keys.begin > t0 || end < t0 + round_up(cols, W);
        const BiasMask<Acc> bias = BiasMask<Acc>::broadcast(
            Acc(softmax.position(r) - g_.key_position(t0) - softmax.offset(r)), softmax.slope(r),
            tile_column<Acc>(keys.begin, t0, KB), tile_column<Acc>(end, t0, KB));
        Packet packet_max = pset1<Packet>(minus_inf);
        for (index_t c = 0; c < cols; c += W) {
          const Packet logit = bias(pload<Packet>(s + c), plset<Packet>(Acc(c)), masked);
          pstore(s + c, logit);
          packet_max = pmax<Eigen::PropagateNaN>(packet_max, logit);  // NaN poisons the row
        }
        const Acc tile_max = predux_max<Eigen::PropagateNaN>(packet_max);
        if (tile_max == minus_inf) {
          std::fill(s, s + KB, Acc(0));
          continue;
        }
        const Acc new_max = std::isnan(tile_max) || tile_max > max[r] ? tile_max : max[r];
        if (!(new_max == max[r])) {
          const Acc factor = max[r] == minus_inf ? Acc(0) : std::exp(max[r] - new_max);
          sum[r] *= factor;
          Acc* o = output + r * value_stride;
          for (index_t d = 0; d < value_stride; ++d) o[d] *= factor;
          max[r] = new_max;
        }
        Packet total = pset1<Packet>(Acc(0));
        const Packet shift = pset1<Packet>(max[r]);
        for (index_t c = 0; c < cols; c += W) {
          const Packet weight = exp_weight(psub(pload<Packet>(s + c), shift));
          pstore(s + c, weight);
          total = padd(total, weight);
        }
        sum[r] += predux(total);
      }
      // output [rows x Dv] += P V, the keys' value rows read in place, 32 keys at a time so
      // that the micro-tiles after the first find the rows in L1. Meanwhile the rows of the
      // next tile are asked for, as far ahead as the scores ask for theirs, a share before each
      // pass over the values (measured: without this the memory idles through P V, and dense
      // decode at 128k keys reads 12% slower; asked for all at once, 6% slower).
      const index_t value_packets = value_stride / W, passes = (value_packets + 3) / 4;
      constexpr index_t block = 32;
      const index_t share = (block + passes - 1) / passes;
      for (index_t c0 = 0; c0 < cols; c0 += block) {
        for (index_t j0 = 0; j0 < value_packets; j0 += 4) {
          const index_t first = KB + ahead + c0 + j0 / 4 * share;
          const index_t last = std::min(first + share, KB + ahead + c0 + block);
          for (index_t i = first; i < last; ++i) prefetch(i);
          for (index_t r0 = 0; r0 < rows; r0 += 4)
            values_columns(std::min<index_t>(4, value_packets - j0), r0, c0,
                           std::min(block, cols - c0), j0 * W, output + r0 * value_stride + j0 * W,
                           value_stride);
        }
      }
      visited += cols;
      for (index_t r = 0; r < rows; ++r) softmax.set_running(r, max[r], sum[r]);
      if (negligible(order)) break;
    }
    for (index_t r = 0; r < rows; ++r) softmax.set_running(r, max[r], sum[r]);
    return visited;
  }

 private:
  /// Keys between a row's prefetch and its use.
  static constexpr index_t ahead = 64;

  /// The key `i` keys into the walk from the current tile's first (this tile, then the two
  /// after it in walk order), its key and value rows asked for; none past the walk's end.
  void prefetch(index_t i) const {
    index_t t;
    if (i < cols_) {
      t = t0_ + i;
    } else if ((i -= cols_) < ahead_[0].end - ahead_[0].begin) {
      t = ahead_[0].begin + i;
    } else if ((i -= ahead_[0].end - ahead_[0].begin) < ahead_[1].end - ahead_[1].begin) {
      t = ahead_[1].begin + i;
    } else {
      return;
    }
    const char* key = reinterpret_cast<const char*>(keys_(t));
    const char* value = reinterpret_cast<const char*>(values_(t));
    for (index_t o = 0; o < key_format_.row_bytes(); o += 64) prefetch_line(key + o);
    for (index_t o = 0; o < value_format_.row_bytes(); o += 64) prefetch_line(value + o);
  }

  /// Scores of keys [t0, t0 + cols) against R query rows (padding rows are zero), `step` keys
  /// at a time: each key row is loaded once, and the R x step sums are independent FMA chains
  /// held in registers.
  template <int R>
  void scores(index_t t0, index_t cols) {
    constexpr int accumulators = Traits::many_registers ? 16 : 8;
    constexpr int step = accumulators / R < 1 ? 1 : accumulators / R;
    index_t c = 0;
    for (; c + step <= cols; c += step) score_keys<R, step>(t0, c);
    for (; c < cols; ++c) score_keys<R, 1>(t0, c);
  }

  template <int R, int S>
  void score_keys(index_t t0, index_t c) {
    using namespace Eigen::internal;
    const index_t dim = g_.head_dim;
    // The key and value rows `ahead` keys on are asked for now: this walk is bound by their
    // latency rather than by the memory bandwidth (measured: 20% faster at 128k keys).
    const Storage* key[S];
    for (int j = 0; j < S; ++j) {
      key[j] = keys_(t0 + c + j);
      prefetch(c + j + ahead);
    }
    Packet acc[R][S];
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < S; ++j) acc[r][j] = pset1<Packet>(Acc(0));
    for (index_t d = 0; d < dim; d += W) {
      Packet q[R];
      for (int r = 0; r < R; ++r) q[r] = in_register(pload<Packet>(queries_.data() + r * dim + d));
      for (int j = 0; j < S; ++j) {
        const Packet k = in_register(key_format_.template load<Packet>(key[j], d));
        for (int r = 0; r < R; ++r) acc[r][j] = pmadd(k, q[r], acc[r][j]);
      }
    }
    store_sums(acc, scores_.data() + c, KB);
  }

  /// output[4 rows x packets] += P[rows r0.., keys c0 .. c0 + n) V[those keys, d0 ..].
  void values_columns(index_t packets, index_t r0, index_t c0, index_t n, index_t d0, Acc* out,
                      index_t out_stride) const {
    if (packets == 4)
      values_tile<4>(r0, c0, n, d0, out, out_stride);
    else if (packets == 3)
      values_tile<3>(r0, c0, n, d0, out, out_stride);
    else if (packets == 2)
      values_tile<2>(r0, c0, n, d0, out, out_stride);
    else
      values_tile<1>(r0, c0, n, d0, out, out_stride);
  }

  // Kept out of line, as the micro-tiles: inlined, its accumulators no longer get registers.
  template <int NP>
  EIGEN_DONT_INLINE void values_tile(index_t r0, index_t c0, index_t n, index_t d0, Acc* out,
                                     index_t out_stride) const {
    using namespace Eigen::internal;
    constexpr int R = 4;
    Packet acc[R][NP];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NP; ++j) acc[i][j] = pload<Packet>(out + i * out_stride + j * W);
    const Acc* p = scores_.data() + r0 * KB + c0;
    for (index_t c = 0; c < n; ++c) {
      const Storage* row = values_(t0_ + c0 + c);
      Packet v[NP];
      for (int j = 0; j < NP; ++j)
        v[j] = in_register(value_format_.template load<Packet>(row, d0 + j * W));
      for (int i = 0; i < R; ++i) {
        const Packet weight = pset1<Packet>(p[i * KB + c]);
        for (int j = 0; j < NP; ++j) acc[i][j] = pmadd(weight, v[j], acc[i][j]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NP; ++j) pstore(out + i * out_stride + j * W, acc[i][j]);
  }

  const Geometry& g_;
  scratch_vector<Acc> queries_, scores_;  // max_rows x head_dim, max_rows x KB
  Rows keys_{}, values_{};
  Format key_format_{}, value_format_{};
  index_t t0_ = 0, cols_ = 0;  // the current tile
  KeyRange ahead_[2];          // the two tiles after it
};

}  // namespace detail
}  // namespace alibi
