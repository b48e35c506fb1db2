#pragma once
// One block of query rows of the backward (the heads of one kv group at consecutive positions),
// packed for its products: scale q and dout, each transposed and row-major, and per row its
// softmax shift, D = rowsum(dout out) and its bias and key range. Packing is strided scalar work
// of O(rows x head dims); the keys pass reuses a packed block across all its key tiles.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "forward.hpp"
#include "geometry.hpp"
#include "kernel_traits.hpp"
#include "numeric.hpp"
#include "scratch.hpp"
#include "tile_softmax.hpp"

namespace alibi {
namespace detail {

template <class T>
struct BackwardViews {
  TensorView<const T> q, k, v, out, dout;
  const float* lse;
  TensorView<T> dq, dk, dv;
  /// In double, each row's lse recomputed relative to its bias offset (LseRefiner); else empty.
  std::vector<double> exact_lse = {};
};

template <class T>
struct BackwardRows {
  using Acc = accum_t<T>;
  using Traits = kernel_traits<Acc>;
  static constexpr index_t W = Traits::width, KB = Traits::key_block;

  BackwardRows(const Geometry& g, index_t capacity_rows)
      : capacity(capacity_rows),
        dim(round_up(g.head_dim, W)),
        value_dim(round_up(g.value_dim, W)),
        queries_t(std::size_t(g.head_dim * (capacity + Traits::line)), Acc(0)),
        queries(std::size_t(capacity * dim), Acc(0)),
        douts_t(std::size_t(g.value_dim * (capacity + Traits::line)), Acc(0)),
        douts(std::size_t(capacity * value_dim), Acc(0)),
        shift(std::size_t(capacity)),
        row_dot(std::size_t(capacity)),
        slope_grad(std::size_t(capacity)),
        lse(std::size_t(capacity)),
        softmax(capacity),
        queries_of(std::size_t(capacity)),
        heads_of(std::size_t(capacity)) {}

  /// Packs query block `block` of (b, kv), unless this already holds it.
  void pack(const Geometry& g, const ForwardTasks& tasks, const BackwardViews<T>& x, index_t b,
            index_t kv, index_t block) {
    const index_t id = (b * g.heads_kv + kv) * tasks.blocks + block;
    if (id == held) return;
    held = id;
    const index_t i0 = tasks.block_begin(block), n = tasks.block_size(block);
    rows = tasks.group * n;
    stride = Traits::unaliased_stride(round_up(rows, Traits::row_unit));
    KeyRange hull{std::numeric_limits<index_t>::max(), std::numeric_limits<index_t>::min()};
    // Only rows that get no values are zeroed: every other element a product reads is written
    // below, and the padding columns of the row-major copies stay zero from construction.
    for (index_t r = rows; r < stride; ++r) zero_row(g, r);
    for (index_t r = 0; r < capacity; ++r) {
      lse[std::size_t(r)] = -std::numeric_limits<double>::infinity();
      if (r >= rows) {  // padding: no keys, zero weights
        softmax.clear_row(r);
        shift[r] = Acc(0);
        row_dot[r] = Acc(0);
        continue;
      }
      const index_t h = kv * tasks.group + r / n, i = i0 + r % n;
      heads_of[r] = h;
      queries_of[r] = i;
      const index_t position = g.query_position(b, i);
      const KeyRange keys = g.query_keys(b, i);
      const index_t offset = g.bias_offset(position, keys, KB);
      softmax.set_row(r, position, keys, Acc(g.slope(b, h)), offset);
      if (i >= g.valid_queries(b)) {  // padding (seqlens_q): never read, dq 0
        shift[r] = std::numeric_limits<Acc>::infinity();
        row_dot[r] = Acc(0);
        zero_row(g, r);
        continue;
      }
      pack_row(g, x, b, i, h, r);
      // P = exp(logit - lse); a row with no allowed key (lse -inf) has only -inf logits.
      const index_t row = (b * g.heads_q + h) * g.seq_q + i;
      // The logits are computed with the bias offset taken out (Geometry::bias_offset); the
      // recomputed lse (exact_lse) already is relative to it.
      const double l = x.exact_lse.empty()
                           ? double(x.lse[row]) + double(g.slope(b, h)) * double(std::abs(offset))
                           : x.exact_lse[std::size_t(row)];
      shift[r] = l == -std::numeric_limits<double>::infinity()
                     ? std::numeric_limits<Acc>::infinity()
                     : Acc(l);
      lse[std::size_t(r)] = l;
      if (keys.empty()) continue;
      hull.begin = std::min(hull.begin, keys.begin);
      hull.end = std::max(hull.end, keys.end);
    }
    span = hull.empty() ? KeyRange{} : hull;
  }

  index_t capacity, dim, value_dim;  // rows the buffers hold; head dims in whole packets
  index_t held = -1;                 // the packed block's index over all (batch, kv head)s
  index_t rows = 0, stride = 0;      // the block's rows, and the transposed copies' row stride
  KeyRange span;                     // the keys any row can attend
  scratch_vector<Acc> queries_t, queries, douts_t, douts;
  scratch_vector<Acc> shift, row_dot;  // per row: the softmax shift and rowsum(dout out)
  // Per row: sum dS (-(|p - t| - |offset|)), the slope gradient with the bias offset taken out.
  // Leaving out |offset| sum dS is exact, since the dS of a row sum to 0 (P sums to 1 and
  // D = sum P dP); kept, it would multiply the rounding of out, in D, by the distance, and break
  // the gradient's invariance under a shift of all distances (measured: 10.54 at a gap of 0, 905
  // at 1e9).
  scratch_vector<Acc> slope_grad;
  std::vector<double> lse;   // the shift in double: the lse relative to the bias offset
  TileSoftmax<Acc> softmax;  // the rows' positions, key ranges, slopes and tile masks
  std::vector<index_t> queries_of, heads_of;

 private:
  void pack_row(const Geometry& g, const BackwardViews<T>& x, index_t b, index_t i, index_t h,
                index_t r) {
    const Acc scale = Acc(g.scale);
    const T* q = x.q.row(b, i, h);
    Acc* qr = queries.data() + r * dim;
    for (index_t d = 0; d < g.head_dim; ++d) {
      const Acc value = Acc(q[d * x.q.strides[3]]) * scale;
      queries_t[std::size_t(d * stride + r)] = value;
      qr[d] = value;
    }
    const T* dout = x.dout.row(b, i, h);
    const T* out = x.out.row(b, i, h);
    Acc* dr = douts.data() + r * value_dim;
    Acc dot = 0;
    for (index_t d = 0; d < g.value_dim; ++d) {
      const Acc value = Acc(dout[d * x.dout.strides[3]]);
      douts_t[std::size_t(d * stride + r)] = value;
      dr[d] = value;
      dot += value * Acc(out[d * x.out.strides[3]]);
    }
    row_dot[r] = dot;
  }

  /// Row r's values zero in both layouts (r < stride; the row-major copies hold capacity rows).
  void zero_row(const Geometry& g, index_t r) {
    for (index_t d = 0; d < g.head_dim; ++d) queries_t[std::size_t(d * stride + r)] = Acc(0);
    for (index_t d = 0; d < g.value_dim; ++d) douts_t[std::size_t(d * stride + r)] = Acc(0);
    if (r >= capacity) return;
    std::fill_n(queries.begin() + r * dim, g.head_dim, Acc(0));
    std::fill_n(douts.begin() + r * value_dim, g.value_dim, Acc(0));
  }
};

}  // namespace detail
}  // namespace alibi
