#pragma once
// The fused forward. A task is a block of query rows: the query heads of one kv group at up to
// query_rows / group consecutive positions of one batch row. It walks the key tiles that any of
// its rows may attend, packs each key and value tile once for all of its rows (the heads of a GQA
// group share it while it is hot), and runs the online softmax between two register-blocked
// products (micro_kernel.hpp). The Sq x Sk matrix never exists: extra memory is O(threads x tile).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>

#include <Eigen/Core>

#include "geometry.hpp"
#include "kernel_traits.hpp"
#include "micro_kernel.hpp"
#include "numeric.hpp"
#include "parallel.hpp"
#include "scratch.hpp"
#include "tail_bound.hpp"
#include "tile_softmax.hpp"

namespace alibi {
namespace detail {

inline index_t round_up(index_t x, index_t multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

/// How a call is cut into tasks (see ForwardWorker).
struct ForwardTasks {
  index_t group;                         // query heads per kv head
  index_t positions;                     // query positions per task
  index_t blocks;                        // tasks per (batch, kv head)
  index_t rows;                          // rows a task buffer must hold
  index_t count;                         // tasks in all
  const KeyNormBounds* norms = nullptr;  // set when the tail skip is on
  index_t norms_shift = 0;               // key t of the call is key norms_shift + t of norms
  struct Counters {
    std::atomic<std::int64_t> keys_visited{0}, keys_allowed{0};
  }* counters = nullptr;

  template <class Acc>
  static ForwardTasks make(const Geometry& g) {
    using Traits = kernel_traits<Acc>;
    ForwardTasks t{};
    t.group = g.heads_q / g.heads_kv;
    t.positions = std::max<index_t>(1, Traits::query_rows / t.group);
    t.blocks = (g.seq_q + t.positions - 1) / t.positions;
    // Whole micro-tiles of rows, whole packets of the scores product, whole row groups.
    t.rows = round_up(t.group * std::min(t.positions, g.seq_q), Traits::row_unit);
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
        output_(std::size_t(stride_ * value_stride_), Acc(0)),
        softmax_(stride_),
        queries_of_(std::size_t(stride_)),
        heads_of_(std::size_t(stride_)),
        query_norms_(std::size_t(stride_)),
        decode_queries_(std::size_t(decode_rows * g.head_dim)),
        decode_scores_(std::size_t(decode_rows * KB)) {}

  void operator()(index_t task) {
    // Consecutive tasks share a kv head, whose keys and values then stay in cache; within a head
    // the heaviest come first (under a causal mask the last query blocks attend the most keys),
    // so the dynamic schedule ends with short tasks.
    const index_t pair = task / tasks_.blocks, block = tasks_.blocks - 1 - task % tasks_.blocks;
    const index_t b = pair / g_.heads_kv, kv = pair % g_.heads_kv;
    const index_t i0 = block * tasks_.positions;
    const index_t n = std::min(tasks_.positions, g_.seq_q - i0);
    const index_t rows = tasks_.group * n;
    const index_t row_packets = (rows + W - 1) / W;
    row_stride_ = round_up(rows, Traits::row_unit);
    index_t visited = 0;

    std::fill(queries_.begin(), queries_.end(), Acc(0));
    std::fill(output_.begin(), output_.end(), Acc(0));
    KeyRange span{std::numeric_limits<index_t>::max(), std::numeric_limits<index_t>::min()};
    for (index_t r = 0; r < stride_; ++r) {
      if (r >= rows) {  // padding: no key allowed, zero weights, never written out
        softmax_.clear_row(r);
        continue;
      }
      heads_of_[r] = kv * tasks_.group + r / n;
      queries_of_[r] = i0 + r % n;
      const index_t position = g_.query_position(b, queries_of_[r]);
      const KeyRange keys = g_.allowed_keys(b, position);
      softmax_.set_row(r, position, keys, Acc(g_.slope(b, heads_of_[r])),
                       g_.bias_offset(position, keys, KB));
      load_query(b, r);
      if (keys.empty()) continue;
      span.begin = std::min(span.begin, keys.begin);
      span.end = std::max(span.end, keys.end);
    }

    if (span.empty()) span = KeyRange{};
    if constexpr (std::is_same<T, Acc>::value) {
      if (decode_shaped(rows)) {
        decode_walk(b, kv, rows, span);
        tasks_.counters->keys_visited += span.end - span.begin;
        tasks_.counters->keys_allowed += span.end - span.begin;
        return;
      }
    }
    // The tiles of the prefill walk, on a worker's first such task (a decode step needs none).
    if (scores_.empty()) {
      keys_.assign(std::size_t(KB * g_.head_dim), Acc(0));
      values_.assign(std::size_t(KB * value_stride_), Acc(0));
      scores_.assign(std::size_t(KB * stride_), Acc(0));
    }
    // Key tiles from the nearest to the farthest: the keys at and before the block's last
    // position going left, those after it going right, whichever side is nearer next. Unvisited
    // keys are [span.begin, left) and [right, span.end).
    index_t first_row = std::numeric_limits<index_t>::max();
    index_t last_row = std::numeric_limits<index_t>::min();
    for (index_t r = 0; r < rows; ++r) {
      first_row = std::min(first_row, softmax_.position(r) - g_.key_offset);
      last_row = std::max(last_row, softmax_.position(r) - g_.key_offset);
    }
    const index_t anchor = std::min(std::max(last_row + 1, span.begin), span.end);
    index_t left = anchor, right = anchor;
    // Without the skip the order is free: forward through memory, as the prefetchers like it.
    if (tasks_.norms == nullptr) left = right = span.begin;
    while (left > span.begin || right < span.end) {
      index_t t0, cols;
      if (left > span.begin && (right >= span.end || first_row - (left - 1) <= right - last_row)) {
        t0 = std::max(span.begin, left - KB);
        cols = left - t0;
        left = t0;
      } else {
        t0 = right;
        cols = std::min(KB, span.end - right);
        right += cols;
      }
      process_tile(b, kv, t0, cols, rows, row_packets);
      visited += cols;
      if (tasks_.norms != nullptr && tail_is_negligible(b, kv, rows, left, right)) break;
    }
    tasks_.counters->keys_visited += visited;
    tasks_.counters->keys_allowed += span.end - span.begin;

    for (index_t r = 0; r < rows; ++r)
      write_row(b, r, softmax_.sum(r), softmax_.max(r), softmax_.slope(r), softmax_.offset(r));
  }

 private:
  /// A decode step (a few query rows per kv head, every key visited, rows of Acc in place): the
  /// prefill tiles would use a quarter of each vector for the rows and read K a scalar at a
  /// time, so this walk vectorises the scores over head_dim instead, streaming each key row once.
  bool decode_shaped(index_t rows) const {
    return rows <= decode_rows && tasks_.norms == nullptr && k_.strides[3] == 1 &&
           v_.strides[3] == 1 && g_.head_dim % W == 0 && g_.value_dim % W == 0;
  }

  void decode_walk(index_t b, index_t kv, index_t rows, KeyRange span) {
    using namespace Eigen::internal;
    const index_t dim = g_.head_dim;
    const Acc minus_inf = -std::numeric_limits<Acc>::infinity();
    // Query rows contiguous (queries_ holds them transposed for the prefill products).
    for (index_t r = 0; r < decode_rows; ++r)
      for (index_t d = 0; d < dim; ++d)
        decode_queries_[r * dim + d] = r < rows ? queries_[d * row_stride_ + r] : Acc(0);
    Acc max[decode_rows], sum[decode_rows];
    for (index_t r = 0; r < decode_rows; ++r) max[r] = minus_inf, sum[r] = 0;
    for (index_t t0 = span.begin; t0 < span.end; t0 += KB) {
      const index_t cols = std::min(KB, span.end - t0);
      // Scores: several keys per step against every query row, each key row read once.
      if (rows <= 1)
        decode_scores<1>(b, kv, t0, cols, span.end);
      else if (rows <= 2)
        decode_scores<2>(b, kv, t0, cols, span.end);
      else if (rows <= 4)
        decode_scores<4>(b, kv, t0, cols, span.end);
      else
        decode_scores<8>(b, kv, t0, cols, span.end);
      // Bias, mask and the online softmax, per row over the tile's keys.
      for (index_t r = 0; r < decode_rows; ++r) {
        Acc* s = decode_scores_.data() + r * KB;
        if (r >= rows) {
          std::fill(s, s + KB, Acc(0));
          continue;
        }
        // -m |d0 - c| for column c, as the prefill's Finish: integers exact in Acc up to 2^24 keys
        // between a row and its nearest key in one task (float; a split decode's chunks hold
        // 16384), and columns outside the row's keys or past the tile masked.
        const KeyRange keys = softmax_.keys(r);
        const index_t end = std::min(keys.end, t0 + cols);
        const bool masked = keys.begin > t0 || end < t0 + round_up(cols, W);
        const Packet d0 =
            pset1<Packet>(Acc(softmax_.position(r) - g_.key_position(t0) - softmax_.offset(r)));
        const Packet minus_slope = pset1<Packet>(-softmax_.slope(r));
        Packet packet_max = pset1<Packet>(minus_inf);
        for (index_t c = 0; c < cols; c += W) {
          const Packet column = plset<Packet>(Acc(c));
          Packet logit = pmadd(pabs(psub(d0, column)), minus_slope, pload<Packet>(s + c));
          if (masked) logit = mask_outside(logit, t0 + c, keys.begin, end);
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
          Acc* o = output_.data() + r * value_stride_;
          for (index_t d = 0; d < value_stride_; ++d) o[d] *= factor;
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
      const index_t value_packets = value_stride_ / W, passes = (value_packets + 3) / 4;
      constexpr index_t block = 32;
      const index_t share = (block + passes - 1) / passes;
      for (index_t c0 = 0; c0 < cols; c0 += block) {
        for (index_t j0 = 0; j0 < value_packets; j0 += 4) {
          const index_t ahead = t0 + KB + decode_ahead + c0 + j0 / 4 * share;
          const index_t last =
              std::min({ahead + share, t0 + KB + decode_ahead + c0 + block, span.end});
          for (index_t t = ahead; t < last; ++t) {
            const char* key = reinterpret_cast<const char*>(k_.row(b, t, kv));
            const char* value = reinterpret_cast<const char*>(v_.row(b, t, kv));
            for (index_t o = 0; o < dim * index_t(sizeof(Acc)); o += 64)
              __builtin_prefetch(key + o);
            for (index_t o = 0; o < g_.value_dim * index_t(sizeof(Acc)); o += 64)
              __builtin_prefetch(value + o);
          }
          for (index_t r0 = 0; r0 < rows; r0 += 4)
            micro_tile_columns<Packet, 4, 4, true>(
                std::min<index_t>(4, value_packets - j0),
                StridedOperand<Acc>{decode_scores_.data() + r0 * KB + c0, KB, 1},
                v_.row(b, t0 + c0, kv) + j0 * W, v_.strides[1], std::min(block, cols - c0),
                output_.data() + r0 * value_stride_ + j0 * W, value_stride_, StoreTile{}, r0, j0);
        }
      }
    }
    for (index_t r = 0; r < rows; ++r)
      write_row(b, r, sum[r], max[r], softmax_.slope(r), softmax_.offset(r));
  }

  /// Scores of keys [t0, t0 + cols) against R query rows (padding rows are zero), `step` keys
  /// at a time: each key row is loaded once, and the R x step sums are independent FMA chains
  /// held in registers.
  template <int R>
  void decode_scores(index_t b, index_t kv, index_t t0, index_t cols, index_t span_end) {
    constexpr int accumulators = Traits::many_registers ? 16 : 8;
    constexpr int step = accumulators / R < 1 ? 1 : accumulators / R;
    index_t c = 0;
    for (; c + step <= cols; c += step) decode_score_keys<R, step>(b, kv, t0, c, span_end);
    for (; c < cols; ++c) decode_score_keys<R, 1>(b, kv, t0, c, span_end);
  }

  template <int R, int S>
  void decode_score_keys(index_t b, index_t kv, index_t t0, index_t c, index_t span_end) {
    using namespace Eigen::internal;
    const index_t dim = g_.head_dim;
    // The key and value rows decode_ahead keys on are asked for now: this walk is bound by their
    // latency rather than by the memory bandwidth (measured: 20% faster at 128k keys).
    const index_t key_bytes = dim * index_t(sizeof(Acc)),
                  value_bytes = g_.value_dim * index_t(sizeof(Acc));
    const Acc* key[S];
    for (int j = 0; j < S; ++j) {
      key[j] = k_.row(b, t0 + c + j, kv);
      const index_t ahead = std::min(t0 + c + j + decode_ahead, span_end - 1);
      const char* next_key = reinterpret_cast<const char*>(k_.row(b, ahead, kv));
      const char* next_value = reinterpret_cast<const char*>(v_.row(b, ahead, kv));
      for (index_t o = 0; o < key_bytes; o += 64) __builtin_prefetch(next_key + o);
      for (index_t o = 0; o < value_bytes; o += 64) __builtin_prefetch(next_value + o);
    }
    Packet acc[R][S];
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < S; ++j) acc[r][j] = pset1<Packet>(Acc(0));
    for (index_t d = 0; d < dim; d += W) {
      Packet q[R];
      for (int r = 0; r < R; ++r)
        q[r] = in_register(pload<Packet>(decode_queries_.data() + r * dim + d));
      for (int j = 0; j < S; ++j) {
        const Packet k = in_register(ploadu<Packet>(key[j] + d));
        for (int r = 0; r < R; ++r) acc[r][j] = pmadd(k, q[r], acc[r][j]);
      }
    }
    store_sums(acc, decode_scores_.data() + c, KB);
  }

  /// One key tile [t0, t0 + cols): scores, online softmax step, P V.
  void process_tile(index_t b, index_t kv, index_t t0, index_t cols, index_t rows,
                    index_t row_packets) {
    softmax_.prepare(rows, t0, cols, g_.key_position(t0));
    // scoresᵀ [keys x rows] = K Qᵀ, finished in registers with the bias, the mask and each
    // row's max over the tile; only the columns some row of a micro-tile can attend.
    const StridedOperand<Acc> keys = key_tile(b, kv, t0, cols);
    for (index_t j0 = 0; j0 < row_packets; j0 += NP) {
      const index_t packets = std::min<index_t>(NP, row_packets - j0);
      const KeyRange columns = softmax_.columns(j0 * W, packets * W);
      for (index_t c0 = columns.begin / MR * MR; c0 < columns.end; c0 += MR)
        micro_tile_columns<Packet, MR, NP, false>(
            packets, StridedOperand<Acc>{keys.data + c0 * keys.row_stride, keys.row_stride, 1},
            queries_.data() + j0 * W, row_stride_, g_.head_dim,
            scores_.data() + c0 * row_stride_ + j0 * W, row_stride_, softmax_.finish(), c0, j0);
    }
    // The logits become softmax weights P; then output [rows x Dv] += P V, each micro-tile of
    // rows over the keys its rows can attend, with P read out of the transposed scores.
    softmax_.normalize(rows, scores_.data(), row_stride_, output_.data(), value_stride_);
    const StridedOperand<Acc> values = value_tile(b, kv, t0, cols);
    const index_t value_packets = value_stride_ / W;
    for (index_t j0 = 0; j0 < value_packets; j0 += NP) {
      const index_t packets = std::min<index_t>(NP, value_packets - j0);
      for (index_t r0 = 0; r0 < rows; r0 += MR) {
        const KeyRange columns = softmax_.columns(r0, MR);
        if (columns.empty()) continue;
        micro_tile_columns<Packet, MR, NP, true>(
            packets,
            StridedOperand<Acc>{scores_.data() + columns.begin * row_stride_ + r0, 1, row_stride_},
            values.data + columns.begin * values.row_stride + j0 * W, values.row_stride,
            columns.end - columns.begin, output_.data() + r0 * value_stride_ + j0 * W,
            value_stride_, StoreTile{}, r0, j0);
      }
    }
  }

  /// Whether every row's unvisited keys, [.., left) and [right, ..), can carry at most
  /// tail_tolerance times its running sum (see tail_bound.hpp).
  bool tail_is_negligible(index_t b, index_t kv, index_t rows, index_t left, index_t right) const {
    const double tolerance = g_.tail_tolerance;
    for (index_t r = 0; r < rows; ++r) {
      const KeyRange keys = softmax_.keys(r);
      const index_t p = softmax_.position(r);
      const double slope = softmax_.slope(r), max = softmax_.max(r);
      // The running max is of the offset logits: so are the distances here.
      const index_t offset = softmax_.offset(r) < 0 ? -softmax_.offset(r) : softmax_.offset(r);
      double bound = 0;
      if (keys.begin < std::min(left, keys.end))
        bound +=
            tail_weight(query_norms_[r], tasks_.norms->before(b, kv, tasks_.norms_shift + left),
                        slope, p - g_.key_position(std::min(left, keys.end) - 1) - offset, max);
      if (std::max(right, keys.begin) < keys.end)
        bound += tail_weight(query_norms_[r], tasks_.norms->from(b, kv, tasks_.norms_shift + right),
                             slope, g_.key_position(std::max(right, keys.begin)) - p - offset, max);
      if (!(bound <= tolerance * double(softmax_.sum(r)))) return false;  // NaN: keep walking
    }
    return true;
  }

  /// Row r of the query block into column r of Qᵀ, scaled: the bias is added after the scale,
  /// as in FlashAttention.
  void load_query(index_t b, index_t r) {
    const T* src = q_.row(b, queries_of_[r], heads_of_[r]);
    const Acc scale = Acc(g_.scale);
    double squares = 0;
    for (index_t d = 0; d < g_.head_dim; ++d) {
      const Acc x = Acc(src[d * q_.strides[3]]) * scale;
      queries_[d * row_stride_ + r] = x;
      squares += double(x) * double(x);
    }
    query_norms_[r] = std::sqrt(squares);
  }

  /// Keys [t0, t0 + cols) of kv head `kv` as rows: read in place when they already are rows of
  /// Acc and the micro-tiles stay inside them, else copied (converted, gathered) into scratch.
  StridedOperand<Acc> key_tile(index_t b, index_t kv, index_t t0, index_t cols) {
    if constexpr (std::is_same<T, Acc>::value) {
      if (k_.strides[3] == 1 && cols % MR == 0) return {k_.row(b, t0, kv), k_.strides[1], 1};
    }
    for (index_t c = 0; c < cols; ++c)
      load_vector(k_.row(b, t0 + c, kv), k_.strides[3], g_.head_dim,
                  keys_.data() + c * g_.head_dim);
    return {keys_.data(), g_.head_dim, 1};
  }

  /// Values [t0, t0 + cols) as rows of whole packets in Acc: read in place when they are rows of
  /// Acc less than a page apart (a KV cache's head-major rows), else copied into scratch. The
  /// P V product reads the tile once per micro-tile of rows, and rows a page or more apart (BSHD
  /// with many heads) would cost a TLB miss each time.
  StridedOperand<Acc> value_tile(index_t b, index_t kv, index_t t0, index_t cols) {
    if constexpr (std::is_same<T, Acc>::value) {
      const index_t row_bytes = v_.strides[1] * index_t(sizeof(T));
      if (v_.strides[3] == 1 && g_.value_dim % W == 0 && row_bytes > 0 && row_bytes < 4096)
        return {v_.row(b, t0, kv), v_.strides[1], 1};
    }
    for (index_t c = 0; c < cols; ++c)
      load_vector(v_.row(b, t0 + c, kv), v_.strides[3], g_.value_dim,
                  values_.data() + c * value_stride_);
    return {values_.data(), value_stride_, 1};
  }

  /// Row r's output, and its lse with the bias offset put back (in double).
  void write_row(index_t b, index_t r, Acc sum, Acc max, Acc slope, index_t offset) const {
    // A row with no allowed key has sum 0: its output is 0, never 0/0.
    const Acc inverse = sum == Acc(0) ? Acc(0) : Acc(1) / sum;
    const Acc* o = output_.data() + r * value_stride_;
    T* dst = out_.row(b, queries_of_[r], heads_of_[r]);
    for (index_t d = 0; d < g_.value_dim; ++d) dst[d * out_.strides[3]] = T(o[d] * inverse);
    if (lse_ != nullptr)
      lse_[(b * g_.heads_q + heads_of_[r]) * g_.seq_q + queries_of_[r]] =
          sum == Acc(0) ? -std::numeric_limits<float>::infinity()
                        : static_cast<float>(double(max) + std::log(double(sum)) -
                                             double(slope) * double(offset < 0 ? -offset : offset));
  }

  const Geometry& g_;
  const ForwardTasks& tasks_;
  TensorView<const T> q_, k_, v_;
  TensorView<T> out_;
  float* lse_;
  index_t stride_;          // query rows the scratch tiles can hold
  index_t row_stride_ = 0;  // query rows of this task's tiles: compact for short tasks (decode)
  index_t value_stride_;    // value_dim rounded up to whole packets
  scratch_vector<Acc> queries_, keys_, values_, scores_, output_;
  TileSoftmax<Acc> softmax_;
  std::vector<index_t> queries_of_, heads_of_;
  std::vector<double> query_norms_;  // of the scaled query rows, for the tail bound
  static constexpr index_t decode_rows = 8;
  static constexpr index_t decode_ahead = 64;           // keys between a row's prefetch and its use
  scratch_vector<Acc> decode_queries_, decode_scores_;  // rows x head_dim, rows x KB
};

/// Whether the tail skip can pay: a tolerance, keys beyond a couple of tiles, a decaying head.
inline bool wants_tail_skip(const Geometry& g, index_t key_block) {
  return g.tail_tolerance > 0 && g.seq_k > 2 * key_block &&
         std::any_of(g.slopes.begin(), g.slopes.end(), [](float m) { return m > 0; });
}

/// One call of the fused forward cut into tasks, for callers that schedule the tasks of several
/// calls in one parallel loop (split_forward). `norms`: key norm bounds the caller keeps (a KV
/// cache; with suffix maxima prepared when not causal); without them, and with the tail skip
/// on, they are measured here in one pass over k. Not movable: the tasks point at the counters.
template <class T>
struct ForwardCall {
  ForwardCall(const Geometry& geometry, TensorView<const T> q_, TensorView<const T> k_,
              TensorView<const T> v_, TensorView<T> out_, float* lse_, int num_threads,
              const KeyNormBounds* norms = nullptr, index_t norms_shift = 0)
      : g(geometry),
        tasks(ForwardTasks::make<accum_t<T>>(g)),
        q(q_),
        k(k_),
        v(v_),
        out(out_),
        lse(lse_) {
    if (wants_tail_skip(g, kernel_traits<accum_t<T>>::key_block)) {
      if (norms == nullptr) {
        measured.emplace(KeyNormBounds::measure(k, num_threads));
        if (!g.causal) measured->prepare_suffix();
        norms = &*measured;
      }
      tasks.norms = norms;
      tasks.norms_shift = measured ? 0 : norms_shift;
    }
    tasks.counters = &counters;
  }
  ForwardCall(const ForwardCall&) = delete;
  ForwardCall& operator=(const ForwardCall&) = delete;

  /// A worker for this call's tasks 0 .. tasks.count - 1.
  ForwardWorker<T> worker() const { return ForwardWorker<T>(g, tasks, q, k, v, out, lse); }
  AttentionStats stats() const { return {counters.keys_visited, counters.keys_allowed}; }

  Geometry g;
  ForwardTasks tasks;
  TensorView<const T> q, k, v;
  TensorView<T> out;
  float* lse;
  std::optional<KeyNormBounds> measured;
  ForwardTasks::Counters counters;
};

/// Runs the fused forward over all tasks (see ForwardCall for `norms`).
template <class T>
void forward(const Geometry& g, TensorView<const T> q, TensorView<const T> k, TensorView<const T> v,
             TensorView<T> out, float* lse, int num_threads, AttentionStats* stats,
             const KeyNormBounds* norms = nullptr, index_t norms_shift = 0) {
  ForwardCall<T> call(g, q, k, v, out, lse, num_threads, norms, norms_shift);
  parallel_tasks(call.tasks.count, num_threads, [&] { return call.worker(); });
  if (stats != nullptr) *stats = call.stats();
}

}  // namespace detail
}  // namespace alibi
