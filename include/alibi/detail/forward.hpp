#pragma once
// The fused forward. A task is a block of query rows: the query heads of one kv group at up to
// query_rows / group consecutive positions of one batch row. It walks the key tiles that any of
// its rows may attend, packs each key and value tile once for all of its rows (the heads of a GQA
// group share it while it is hot), and runs the online softmax between two register-blocked
// products (micro_kernel.hpp). The Sq x Sk matrix never exists: extra memory is O(threads x tile).

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

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
    t.rows = round_up(std::max<index_t>(Traits::query_rows, t.group),
                      Traits::micro_packets * Traits::width);
    t.count = g.batch * g.heads_kv * t.blocks;
    return t;
  }
};

/// Copies n elements of a head vector (stride in elements) into Acc: where storage types and
/// strides end. Contiguous rows convert with Eigen's vectorised casts.
template <class T, class Acc>
void load_vector(const T* src, index_t stride, index_t n, Acc* dst) {
  if (stride == 1) {
    Eigen::Map<Eigen::Array<Acc, 1, Eigen::Dynamic>>(dst, n) =
        Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>(src, n).template cast<Acc>();
  } else {
    for (index_t d = 0; d < n; ++d) dst[d] = Acc(src[d * stride]);
  }
}

template <class T>
class ForwardWorker {
  using Acc = accum_t<T>;
  using Traits = kernel_traits<Acc>;
  using Packet = typename Traits::Packet;
  static constexpr index_t W = Traits::width, KB = Traits::key_block;
  static constexpr int MR = Traits::micro_rows, NP = Traits::micro_packets;

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
        stride_(tasks.rows),
        value_stride_(round_up(g.value_dim, W)),
        queries_(std::size_t(g.head_dim * stride_), Acc(0)),
        keys_(std::size_t(KB * g.head_dim), Acc(0)),
        values_(std::size_t(KB * value_stride_), Acc(0)),
        scores_(std::size_t(KB * stride_), Acc(0)),
        output_(std::size_t(stride_ * value_stride_), Acc(0)),
        distance_(std::size_t(stride_)),
        minus_slope_(distance_.size()),
        first_(distance_.size()),
        last_(distance_.size()),
        tile_max_(distance_.size()),
        max_(distance_.size()),
        sum_(distance_.size()),
        factor_(distance_.size()),
        queries_of_(distance_.size()),
        heads_of_(distance_.size()),
        positions_(distance_.size()),
        keys_of_(distance_.size()),
        edge_(std::size_t(stride_ / W)) {}

  void operator()(index_t task) {
    // Consecutive tasks share a kv head, whose keys and values then stay in cache; within a head
    // the heaviest come first (under a causal mask the last query blocks attend the most keys),
    // so the dynamic schedule ends with short tasks.
    const index_t pair = task / tasks_.blocks, block = tasks_.blocks - 1 - task % tasks_.blocks;
    const index_t b = pair / g_.heads_kv, kv = pair % g_.heads_kv;
    const index_t i0 = block * tasks_.positions;
    const index_t n = std::min(tasks_.positions, g_.seq_q - i0);
    const index_t rows = tasks_.group * n;
    const index_t row_packets = (rows + W - 1) / W, product_rows = round_up(rows, MR);

    std::fill(queries_.begin(), queries_.end(), Acc(0));
    std::fill(output_.begin(), output_.begin() + product_rows * value_stride_, Acc(0));
    std::fill(max_.begin(), max_.end(), -std::numeric_limits<Acc>::infinity());
    std::fill(sum_.begin(), sum_.end(), Acc(0));
    KeyRange span{std::numeric_limits<index_t>::max(), std::numeric_limits<index_t>::min()};
    for (index_t r = 0; r < stride_; ++r) {
      if (r >= rows) {  // padding: no key allowed, zero weights, never written out
        keys_of_[r] = KeyRange{};
        minus_slope_[r] = Acc(0);
        continue;
      }
      heads_of_[r] = kv * tasks_.group + r / n;
      queries_of_[r] = i0 + r % n;
      positions_[r] = g_.query_position(b, queries_of_[r]);
      keys_of_[r] = g_.allowed_keys(b, positions_[r]);
      minus_slope_[r] = -Acc(g_.slope(b, heads_of_[r]));
      load_query(b, r);
      if (keys_of_[r].empty()) continue;
      span.begin = std::min(span.begin, keys_of_[r].begin);
      span.end = std::max(span.end, keys_of_[r].end);
    }

    for (index_t t0 = span.begin; t0 < span.end; t0 += KB) {
      const index_t cols = std::min(KB, span.end - t0);
      const StridedOperand<Acc> keys = key_tile(b, kv, t0, cols);
      const StridedOperand<Acc> values = value_tile(b, kv, t0, cols);
      // scoresᵀ [keys x rows] = K Qᵀ, finished in registers with the bias, the mask and each
      // row's max over the tile; then the softmax weights replace the logits.
      prepare_tile(t0, cols, row_packets);
      tile_product<Packet, MR, NP, false>(
          keys, round_up(cols, MR), queries_.data(), stride_, g_.head_dim, row_packets,
          scores_.data(), stride_,
          ScoreTile{distance_.data(), minus_slope_.data(), first_.data(), last_.data(),
                    edge_.data(), tile_max_.data()});
      softmax_step(cols, row_packets);
      // output [rows x Dv] += P V, with P read out of the transposed scores.
      tile_product<Packet, MR, NP, true>(StridedOperand<Acc>{scores_.data(), 1, stride_},
                                         product_rows, values.data, values.row_stride, cols,
                                         value_stride_ / W, output_.data(), value_stride_);
    }

    for (index_t r = 0; r < rows; ++r) write_row(b, r);
  }

 private:
  /// Row r of the query block into column r of Qᵀ, scaled: the bias is added after the scale,
  /// as in FlashAttention.
  void load_query(index_t b, index_t r) {
    const T* src = q_.row(b, queries_of_[r], heads_of_[r]);
    const Acc scale = Acc(g_.scale);
    for (index_t d = 0; d < g_.head_dim; ++d)
      queries_[d * stride_ + r] = Acc(src[d * q_.strides[3]]) * scale;
  }

  /// Keys [t0, t0 + cols) of kv head `kv` as rows: read in place when they already are rows of
  /// Acc and the micro-tiles stay inside them, else copied (converted, gathered) into scratch.
  StridedOperand<Acc> key_tile(index_t b, index_t kv, index_t t0, index_t cols) {
    if (std::is_same<T, Acc>::value && k_.strides[3] == 1 && cols % MR == 0)
      return {reinterpret_cast<const Acc*>(k_.row(b, t0, kv)), k_.strides[1], 1};
    for (index_t c = 0; c < cols; ++c)
      load_vector(k_.row(b, t0 + c, kv), k_.strides[3], g_.head_dim,
                  keys_.data() + c * g_.head_dim);
    return {keys_.data(), g_.head_dim, 1};
  }

  /// Values [t0, t0 + cols) as rows of whole packets (row_stride is the distance between rows).
  StridedOperand<Acc> value_tile(index_t b, index_t kv, index_t t0, index_t cols) {
    if (std::is_same<T, Acc>::value && v_.strides[3] == 1 && g_.value_dim % W == 0)
      return {reinterpret_cast<const Acc*>(v_.row(b, t0, kv)), v_.strides[1], 1};
    for (index_t c = 0; c < cols; ++c)
      load_vector(v_.row(b, t0 + c, kv), v_.strides[3], g_.value_dim,
                  values_.data() + c * value_stride_);
    return {values_.data(), value_stride_, 1};
  }

  /// Per row of the task, for keys [t0, t0 + cols): the distance of the tile's first key, the
  /// allowed columns, whether each packet of rows needs the mask, and a fresh tile max.
  /// Distances stay exact integers until here and are exact in Acc below 2^24 (float); columns
  /// are clamped to a little beyond the tile, which keeps them exact too.
  void prepare_tile(index_t t0, index_t cols, index_t row_packets) {
    const auto clamp = [](index_t x) { return Acc(std::min(std::max<index_t>(x, -1), KB + 1)); };
    // The scores product covers whole micro-tiles of keys: columns past `cols` must be masked.
    const index_t covered = round_up(cols, MR);
    for (index_t j = 0; j < row_packets; ++j) {
      bool edge = false;
      for (index_t r = j * W; r < (j + 1) * W; ++r) {
        const KeyRange keys = keys_of_[r];
        distance_[r] = keys.empty() ? Acc(0) : Acc(positions_[r] - g_.key_position(t0));
        first_[r] = clamp(keys.begin - t0);
        last_[r] = clamp(keys.end - t0);
        tile_max_[r] = -std::numeric_limits<Acc>::infinity();
        edge = edge || keys.empty() || keys.begin > t0 || keys.end < t0 + covered;
      }
      edge_[j] = edge;
    }
  }

  /// Finishes a micro-tile of scoresᵀ (keys by packets of query rows) in registers: adds
  /// -m |d0 - c| for key column c, masks where the tile needs it, stores the logits and folds
  /// them into each row's max over the tile.
  struct ScoreTile {
    const Acc *distance, *minus_slope, *first, *last;
    const char* edge;
    Acc* tile_max;

    template <int MR_, int NP_>
    void operator()(Packet (&acc)[MR_][NP_], Acc* out, index_t out_stride, index_t key,
                    index_t packet) const {
      using namespace Eigen::internal;
      const Packet minus_inf = pset1<Packet>(-std::numeric_limits<Acc>::infinity());
      for (int j = 0; j < NP_; ++j) {
        const index_t r0 = (packet + j) * W;
        const Packet d0 = pload<Packet>(distance + r0), slope = pload<Packet>(minus_slope + r0);
        const Packet lo = pload<Packet>(first + r0), hi = pload<Packet>(last + r0);
        const bool masked = edge[packet + j] != 0;
        Packet max = pload<Packet>(tile_max + r0);
        for (int i = 0; i < MR_; ++i) {
          const Packet column = pset1<Packet>(Acc(key + i));
          Packet logit = pmadd(pabs(psub(d0, column)), slope, acc[i][j]);
          if (masked)
            logit = pselect(por(pcmp_lt(column, lo), pcmp_le(hi, column)), minus_inf, logit);
          pstore(out + i * out_stride + j * W, logit);
          max = pmax<Eigen::PropagateNaN>(max, logit);  // a NaN logit poisons its row
        }
        pstore(tile_max + r0, max);
      }
    }
  };

  /// Turns the tile's logits into softmax weights against each row's running max (exp, sum), a
  /// packet of query rows at a time, and rescales the output rows whose max grew.
  void softmax_step(index_t cols, index_t row_packets) {
    using namespace Eigen::internal;
    const Packet minus_inf = pset1<Packet>(-std::numeric_limits<Acc>::infinity());
    for (index_t j = 0; j < row_packets; ++j) {
      const index_t r0 = j * W;
      const Packet old_max = pload<Packet>(&max_[r0]);
      const Packet new_max = pmax<Eigen::PropagateNaN>(old_max, pload<Packet>(&tile_max_[r0]));
      // Rows that have seen no allowed key keep max -inf: shift by 0 so -inf - -inf is not NaN.
      const Packet shift = pselect(pcmp_eq(new_max, minus_inf), pset1<Packet>(Acc(0)), new_max);
      const Packet factor = exp_weight(psub(old_max, shift));
      const Packet total = exp_and_sum(r0, cols, shift);
      pstore(&sum_[r0], padd(pmul(pload<Packet>(&sum_[r0]), factor), total));
      pstore(&max_[r0], new_max);
      pstore(&factor_[r0], factor);
    }
    for (index_t r = 0; r < row_packets * W; ++r) {
      if (factor_[r] == Acc(1)) continue;
      Acc* o = output_.data() + r * value_stride_;
      const Packet factor = pset1<Packet>(factor_[r]);
      for (index_t d = 0; d < value_stride_; d += W)
        pstore(o + d, pmul(pload<Packet>(o + d), factor));
    }
  }

  /// Replaces the logits of one packet of rows by exp(logit - shift); returns their sum. Four
  /// independent sums: one would wait on its own latency at every key.
  Packet exp_and_sum(index_t r0, index_t cols, const Packet& shift) {
    using namespace Eigen::internal;
    const auto weight = [&](index_t c) {
      Acc* s = scores_.data() + c * stride_ + r0;
      const Packet w = exp_weight(psub(pload<Packet>(s), shift));
      pstore(s, w);
      return w;
    };
    Packet s0 = pset1<Packet>(Acc(0)), s1 = s0, s2 = s0, s3 = s0;
    index_t c = 0;
    for (; c + 4 <= cols; c += 4) {
      s0 = padd(s0, weight(c));
      s1 = padd(s1, weight(c + 1));
      s2 = padd(s2, weight(c + 2));
      s3 = padd(s3, weight(c + 3));
    }
    for (; c < cols; ++c) s0 = padd(s0, weight(c));
    return padd(padd(s0, s1), padd(s2, s3));
  }

  void write_row(index_t b, index_t r) const {
    const Acc sum = sum_[r];
    // A row with no allowed key has sum 0: its output is 0, never 0/0.
    const Acc inverse = sum == Acc(0) ? Acc(0) : Acc(1) / sum;
    const Acc* o = output_.data() + r * value_stride_;
    T* dst = out_.row(b, queries_of_[r], heads_of_[r]);
    for (index_t d = 0; d < g_.value_dim; ++d) dst[d * out_.strides[3]] = T(o[d] * inverse);
    if (lse_ != nullptr)
      lse_[(b * g_.heads_q + heads_of_[r]) * g_.seq_q + queries_of_[r]] =
          sum == Acc(0) ? -std::numeric_limits<float>::infinity()
                        : static_cast<float>(max_[r] + std::log(sum));
  }

  const Geometry& g_;
  const ForwardTasks& tasks_;
  TensorView<const T> q_, k_, v_;
  TensorView<T> out_;
  float* lse_;
  index_t stride_;        // query rows of the scratch tiles, a multiple of the micro-tile's
  index_t value_stride_;  // value_dim rounded up to whole packets
  scratch_vector<Acc> queries_, keys_, values_, scores_, output_;
  // Per query row of the task.
  scratch_vector<Acc> distance_, minus_slope_, first_, last_, tile_max_, max_, sum_, factor_;
  std::vector<index_t> queries_of_, heads_of_, positions_;
  std::vector<KeyRange> keys_of_;
  std::vector<char> edge_;  // per packet of rows: some lane needs the mask in this tile
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
