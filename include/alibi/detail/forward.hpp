#pragma once
// The fused forward. A task is a block of query rows: the query heads of one kv group at up to
// query_rows / group consecutive positions of one batch row. It walks the key tiles that any of
// its rows may attend, packs each key and value tile once for all of its rows (the heads of a GQA
// group share it while it is hot), and runs the online softmax between two register-blocked
// products (micro_kernel.hpp). The Sq x Sk matrix never exists: extra memory is O(threads x tile).

#include <algorithm>
#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "geometry.hpp"
#include "kernel_traits.hpp"
#include "micro_kernel.hpp"
#include "numeric.hpp"
#include "packet_math.hpp"
#include "parallel.hpp"
#include "scratch.hpp"

namespace alibi {
namespace detail {

inline index_t round_up(index_t x, index_t multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

/// How a call is cut into tasks (see ForwardWorker).
struct ForwardTasks {
  index_t group;      // query heads per kv head
  index_t positions;  // query positions per task
  index_t blocks;     // tasks per (batch, kv head)
  index_t rows;       // rows a task buffer must hold
  index_t count;      // tasks in all

  template <class Acc>
  static ForwardTasks make(const Geometry& g) {
    using Traits = kernel_traits<Acc>;
    ForwardTasks t;
    t.group = g.heads_q / g.heads_kv;
    t.positions = std::max<index_t>(1, Traits::query_rows / t.group);
    t.blocks = (g.seq_q + t.positions - 1) / t.positions;
    t.rows = round_up(std::max<index_t>(Traits::query_rows, t.group), Traits::micro_rows);
    t.count = g.batch * g.heads_kv * t.blocks;
    return t;
  }
};

template <class T>
class ForwardWorker {
  using Acc = accum_t<T>;
  using Traits = kernel_traits<Acc>;
  using Packet = typename Traits::Packet;
  static constexpr index_t W = Traits::width, KB = Traits::key_block;
  static constexpr int MR = Traits::micro_rows, NP = Traits::micro_packets;

  /// One query row of a task: query `query` of head `head`, and its softmax state.
  struct Row {
    index_t query, head, position;
    KeyRange keys;
    Acc slope, max, sum;
  };

 public:
  ForwardWorker(const Geometry& g, const ForwardTasks& tasks, TensorView<const T> q,
                TensorView<const T> k, TensorView<const T> v, TensorView<T> out, float* lse)
      : g_(g),
        tasks_(tasks),
        q_(q),
        k_(k),
        v_(v),
        out_(out),
        lse_(lse),
        value_stride_(round_up(g.value_dim, W)),
        queries_(std::size_t(tasks.rows * g.head_dim), Acc(0)),
        keys_(std::size_t(g.head_dim * KB), Acc(0)),
        values_(std::size_t(KB * value_stride_), Acc(0)),
        scores_(std::size_t(tasks.rows * KB), Acc(0)),
        output_(std::size_t(tasks.rows * value_stride_), Acc(0)),
        rows_(std::size_t(tasks.rows)) {}

  void operator()(index_t task) {
    // Heaviest first: under a causal mask the last query blocks attend the most keys, and the
    // dynamic schedule then ends with short tasks.
    const index_t pairs = g_.batch * g_.heads_kv;
    const index_t block = tasks_.blocks - 1 - task / pairs;
    const index_t b = (task % pairs) / g_.heads_kv, kv = task % g_.heads_kv;
    const index_t i0 = block * tasks_.positions;
    const index_t n = std::min(tasks_.positions, g_.seq_q - i0);
    const index_t rows = tasks_.group * n, padded_rows = round_up(rows, MR);

    KeyRange span{std::numeric_limits<index_t>::max(), std::numeric_limits<index_t>::min()};
    for (index_t r = 0; r < rows; ++r) {
      Row& row = rows_[r];
      row.head = kv * tasks_.group + r / n;
      row.query = i0 + r % n;
      row.position = g_.query_position(b, row.query);
      row.keys = g_.allowed_keys(b, row.position);
      row.slope = Acc(g_.slope(b, row.head));
      row.max = -std::numeric_limits<Acc>::infinity();
      row.sum = Acc(0);
      load_query(b, row, queries_.data() + r * g_.head_dim);
      if (row.keys.empty()) continue;
      span.begin = std::min(span.begin, row.keys.begin);
      span.end = std::max(span.end, row.keys.end);
    }
    // Padding rows compute harmless zeros that are never written out.
    std::fill(queries_.begin() + rows * g_.head_dim, queries_.begin() + padded_rows * g_.head_dim,
              Acc(0));
    std::fill(output_.begin(), output_.begin() + padded_rows * value_stride_, Acc(0));

    for (index_t t0 = span.begin; t0 < span.end; t0 += KB) {
      const index_t cols = std::min(KB, span.end - t0), packets = (cols + W - 1) / W;
      pack_tile(b, kv, t0, cols);
      tile_product<Packet, MR, NP, false>(queries_.data(), g_.head_dim, padded_rows, keys_.data(),
                                          KB, g_.head_dim, packets, scores_.data(), KB);
      for (index_t r = 0; r < rows; ++r) softmax_step(r, t0, cols, packets);
      tile_product<Packet, MR, NP, true>(scores_.data(), KB, padded_rows, values_.data(),
                                         value_stride_, cols, value_stride_ / W, output_.data(),
                                         value_stride_);
    }

    for (index_t r = 0; r < rows; ++r) write_row(b, rows_[r], output_.data() + r * value_stride_);
  }

 private:
  /// The query row, in Acc and already scaled: the bias is added after the scale, as in
  /// FlashAttention.
  void load_query(index_t b, const Row& row, Acc* dst) const {
    const T* src = q_.row(b, row.query, row.head);
    const Acc scale = Acc(g_.scale);
    for (index_t d = 0; d < g_.head_dim; ++d) dst[d] = Acc(src[d * q_.strides[3]]) * scale;
  }

  /// Keys [t0, t0 + cols) of kv head `kv`, transposed to head_dim rows of KB keys, and their
  /// values as cols rows of value_stride_: the storage type and strides end here.
  void pack_tile(index_t b, index_t kv, index_t t0, index_t cols) {
    for (index_t c = 0; c < cols; ++c) {
      const T* key = k_.row(b, t0 + c, kv);
      for (index_t d = 0; d < g_.head_dim; ++d) keys_[d * KB + c] = Acc(key[d * k_.strides[3]]);
      const T* value = v_.row(b, t0 + c, kv);
      Acc* dst = values_.data() + c * value_stride_;
      for (index_t d = 0; d < g_.value_dim; ++d) dst[d] = Acc(value[d * v_.strides[3]]);
    }
  }

  /// Turns row r's scores over keys [t0, t0 + cols) into softmax weights against the running
  /// max: bias, mask, max, exp, sum; rescales the row's output when the max grows.
  void softmax_step(index_t r, index_t t0, index_t cols, index_t packets) {
    using namespace Eigen::internal;
    Row& row = rows_[r];
    Acc* s = scores_.data() + r * KB;
    const index_t first = row.keys.begin - t0, last = row.keys.end - t0;  // allowed columns
    if (last <= 0 || first >= cols) {
      std::fill(s, s + packets * W, Acc(0));
      return;
    }
    const bool edge = first > 0 || last < packets * W;
    // -m |p - t| with the distance exact in integers until the last step: column c of the tile
    // is at distance |d0 - c|, and d0 - c is exact in Acc below 2^24 (float).
    const Packet d0 = pset1<Packet>(Acc(row.position - g_.key_position(t0)));
    const Packet minus_slope = pset1<Packet>(-row.slope);
    const Packet lanes = plset<Packet>(Acc(0));
    Packet tile_max = pset1<Packet>(-std::numeric_limits<Acc>::infinity());
    for (index_t j = 0; j < packets; ++j) {
      const Packet distance = pabs(psub(d0, padd(lanes, pset1<Packet>(Acc(j * W)))));
      Packet logit = pmadd(distance, minus_slope, pload<Packet>(s + j * W));
      if (edge) logit = mask_outside(logit, j * W, first, last);
      pstore(s + j * W, logit);
      tile_max = pmax<Eigen::PropagateNaN>(tile_max, logit);  // a NaN logit must poison its row
    }
    const Acc m = predux_max<Eigen::PropagateNaN>(tile_max);
    if (m == -std::numeric_limits<Acc>::infinity()) {
      std::fill(s, s + packets * W, Acc(0));
      return;
    }
    if (m > row.max) {
      if (row.max != -std::numeric_limits<Acc>::infinity()) {
        const Acc rescale = std::exp(row.max - m);
        row.sum *= rescale;
        Acc* o = output_.data() + r * value_stride_;
        const Packet factor = pset1<Packet>(rescale);
        for (index_t j = 0; j < value_stride_; j += W)
          pstore(o + j, pmul(pload<Packet>(o + j), factor));
      }
      row.max = m;
    }
    const Packet shift = pset1<Packet>(row.max);
    Packet sum = pzero(shift);
    for (index_t j = 0; j < packets; ++j) {
      const Packet weight = exp_weight(psub(pload<Packet>(s + j * W), shift));
      pstore(s + j * W, weight);
      sum = padd(sum, weight);
    }
    row.sum += predux(sum);
  }

  void write_row(index_t b, const Row& row, const Acc* o) const {
    // A row with no allowed key has sum 0: its output is 0, never 0/0.
    const Acc inverse = row.sum == Acc(0) ? Acc(0) : Acc(1) / row.sum;
    T* dst = out_.row(b, row.query, row.head);
    for (index_t d = 0; d < g_.value_dim; ++d) dst[d * out_.strides[3]] = T(o[d] * inverse);
    if (lse_ != nullptr)
      lse_[(b * g_.heads_q + row.head) * g_.seq_q + row.query] =
          row.sum == Acc(0) ? -std::numeric_limits<float>::infinity()
                            : static_cast<float>(row.max + std::log(row.sum));
  }

  const Geometry& g_;
  const ForwardTasks& tasks_;
  TensorView<const T> q_, k_, v_;
  TensorView<T> out_;
  float* lse_;
  index_t value_stride_;
  scratch_vector<Acc> queries_, keys_, values_, scores_, output_;
  std::vector<Row> rows_;
};

/// Runs the fused forward over all tasks.
template <class T>
void forward(const Geometry& g, TensorView<const T> q, TensorView<const T> k, TensorView<const T> v,
             TensorView<T> out, float* lse, int num_threads) {
  const ForwardTasks tasks = ForwardTasks::make<accum_t<T>>(g);
  parallel_tasks(tasks.count, num_threads,
                 [&] { return ForwardWorker<T>(g, tasks, q, k, v, out, lse); });
}

}  // namespace detail
}  // namespace alibi
