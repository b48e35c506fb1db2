#pragma once
// The fused forward. A task is a block of query rows: the query heads of one kv group at up to
// query_rows / group consecutive positions of one batch row. It walks the key tiles that any of
// its rows may attend (tile_order.hpp), packs each key and value tile once for all of its rows
// (the heads of a GQA group share it while it is hot), and runs the online softmax between two
// register-blocked products (micro_kernel.hpp); a decode step's few rows take their own walk
// (decode_walk.hpp). Keys and values come from a source (kv_source.hpp): a strided view or a
// sequence's pages, in any storage format. The Sq x Sk matrix never exists: extra memory is
// O(threads x tile). How tasks are scheduled, and long rows split, is split_kv.hpp.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "decode_walk.hpp"
#include "geometry.hpp"
#include "kernel_traits.hpp"
#include "kv_source.hpp"
#include "micro_kernel.hpp"
#include "numeric.hpp"
#include "scratch.hpp"
#include "sinks.hpp"
#include "tail_bound.hpp"
#include "tile_order.hpp"
#include "tile_softmax.hpp"

namespace alibi {
namespace detail {

/// How a call is cut into tasks (see ForwardWorker).
struct ForwardTasks {
  index_t group;      // query heads per kv head
  index_t positions;  // query positions per task
  index_t blocks;     // tasks per (batch, kv head)
  index_t rows;       // rows a task buffer must hold
  index_t count;      // tasks in all
  index_t seq_q;
  /// Packed sequences: the first query of each block, then seq_q (a block never straddles two
  /// sequences, whose keys are disjoint). Empty: block j starts at j * positions.
  std::vector<index_t> starts;

  index_t block_begin(index_t block) const {
    return starts.empty() ? block * positions : starts[std::size_t(block)];
  }
  index_t block_size(index_t block) const {
    return starts.empty() ? std::min(positions, seq_q - block * positions)
                          : starts[std::size_t(block) + 1] - starts[std::size_t(block)];
  }

  template <class Acc>
  static ForwardTasks make(const Geometry& g) {
    using Traits = kernel_traits<Acc>;
    ForwardTasks t{};
    t.group = g.heads_q / g.heads_kv;
    t.positions = std::max<index_t>(1, Traits::query_rows / t.group);
    t.seq_q = g.seq_q;
    t.blocks = (g.seq_q + t.positions - 1) / t.positions;
    if (g.packed()) {
      for (std::size_t s = 0; s + 1 < g.cu_seqlens_q.size(); ++s)
        for (index_t i = g.cu_seqlens_q[s]; i < g.cu_seqlens_q[s + 1]; i += t.positions)
          t.starts.push_back(i);
      t.blocks = index_t(t.starts.size());
      t.starts.push_back(g.seq_q);
    }
    // Whole micro-tiles of rows, whole packets of the scores product, whole row groups.
    t.rows = round_up(t.group * std::min(t.positions, g.seq_q), Traits::row_unit);
    t.count = g.batch * g.heads_kv * t.blocks;
    return t;
  }
};

/// What the tasks of a call did (Params::stats), summed as they finish.
struct TaskCounters {
  std::atomic<std::int64_t> keys_visited{0}, keys_allowed{0};
};

/// A partial row's lse kept exact at any distance: `value` = max + log(sum) of its logits with
/// the bias offset taken out, in double, and that offset's magnitude; the lse is
/// value - slope x distance. Split rows merge through it (split_kv.hpp): a float lse, or even a
/// double one, loses the digits a merge needs once the keys are 10^9 or more positions away.
struct PartialLse {
  double value;
  index_t distance;
};

/// Where a task writes its rows: query i of head h in batch row b to out.row(b, i, h), and its
/// lse (float, or PartialLse) to lse[b * lse_batch + h * seq_q + i] (none when lse is null).
template <class Out, class Lse = float>
struct RowSink {
  TensorView<Out> out;
  Lse* lse;
  index_t lse_batch;
};

/// Whether the tail skip can pay: a tolerance, keys beyond a couple of tiles, a decaying head.
inline bool wants_tail_skip(const Geometry& g, index_t key_block) {
  return g.tail_tolerance > 0 && g.seq_k > 2 * key_block &&
         std::any_of(g.slopes.begin(), g.slopes.end(), [](float m) { return m > 0; });
}

template <class Q, class Source>
class ForwardWorker {
  using Acc = accum_t<Q>;
  using Storage = typename Source::Format::Storage;
  using Traits = kernel_traits<Acc>;
  using Packet = typename Traits::Packet;
  static constexpr index_t W = Traits::width, KB = Traits::key_block;
  static constexpr int MR = Traits::micro_rows, NP = Traits::micro_packets;
  static_assert(std::is_same<Acc, typename Source::Format::Acc>::value,
                "queries and keys are accumulated in the same type");

 public:
  ForwardWorker(const Geometry& g, const ForwardTasks& tasks, TensorView<const Q> q,
                const Source& source, TaskCounters& counters)
      : g_(g),
        tasks_(tasks),
        q_(q),
        source_(source),
        counters_(counters),
        skip_(source.has_norms() && wants_tail_skip(g, KB)),
        round_off_(LogitRoundOff::of(std::numeric_limits<Acc>::epsilon() / 2, g.head_dim)),
        stride_(tasks.rows),
        value_stride_(round_up(g.value_dim, W)),
        queries_(std::size_t(g.head_dim * (stride_ + Traits::line)), Acc(0)),
        output_(std::size_t(stride_ * value_stride_), Acc(0)),
        softmax_(stride_),
        queries_of_(std::size_t(stride_)),
        heads_of_(std::size_t(stride_)),
        query_norms_(std::size_t(stride_)),
        decode_(g) {}

  /// Task `task` of the call (all keys of its rows) into `sink`. Consecutive tasks share a kv
  /// head, whose keys and values then stay in cache; within a head the heaviest come first (under
  /// a causal mask the last query blocks attend the most keys), so a dynamic schedule ends with
  /// short tasks.
  template <class Out, class Lse>
  void operator()(index_t task, const RowSink<Out, Lse>& sink) {
    const index_t pair = task / tasks_.blocks, block = tasks_.blocks - 1 - task % tasks_.blocks;
    run(pair / g_.heads_kv, pair % g_.heads_kv, block,
        KeyRange{std::numeric_limits<index_t>::min(), std::numeric_limits<index_t>::max()}, true,
        sink);
  }

  /// Query block `block` of (b, kv) over the keys of `chunk` only (a split row's part), into
  /// `sink`. `count_allowed`: add the rows' allowed keys, all chunks', to the counters.
  template <class Out, class Lse>
  void run(index_t b, index_t kv, index_t block, KeyRange chunk, bool count_allowed,
           const RowSink<Out, Lse>& sink) {
    const index_t i0 = tasks_.block_begin(block), n = tasks_.block_size(block);
    const index_t rows = tasks_.group * n;
    row_stride_ = Traits::unaliased_stride(round_up(rows, Traits::row_unit));

    std::fill(queries_.begin(), queries_.end(), Acc(0));
    std::fill(output_.begin(), output_.end(), Acc(0));
    const index_t first_key = source_.first_key(b, kv);
    KeyRange span{std::numeric_limits<index_t>::max(), std::numeric_limits<index_t>::min()};
    KeyRange allowed = span;
    index_t first_row = std::numeric_limits<index_t>::max();
    index_t last_row = std::numeric_limits<index_t>::min();
    for (index_t r = 0; r < stride_; ++r) {
      if (r >= rows) {  // padding: no key allowed, zero weights, never written out
        softmax_.clear_row(r);
        continue;
      }
      heads_of_[r] = kv * tasks_.group + r / n;
      queries_of_[r] = i0 + r % n;
      const index_t position = g_.query_position(b, queries_of_[r]);
      KeyRange keys = g_.query_keys(b, queries_of_[r]);
      keys.begin = std::max(keys.begin, first_key);
      if (!keys.empty()) {
        allowed.begin = std::min(allowed.begin, keys.begin);
        allowed.end = std::max(allowed.end, keys.end);
      }
      keys = {std::max(keys.begin, chunk.begin), std::min(keys.end, chunk.end)};
      if (keys.empty()) keys = KeyRange{};
      softmax_.set_row(r, position, keys, Acc(g_.slope(b, heads_of_[r])),
                       g_.bias_offset(position, keys, KB));
      if (queries_of_[r] >= g_.valid_queries(b)) continue;  // padding (seqlens_q): never read
      load_query(b, r);
      first_row = std::min(first_row, position - g_.key_offset);
      last_row = std::max(last_row, position - g_.key_offset);
      if (keys.empty()) continue;
      span.begin = std::min(span.begin, keys.begin);
      span.end = std::max(span.end, keys.end);
    }
    if (span.empty()) span = KeyRange{};
    if (count_allowed && !allowed.empty()) counters_.keys_allowed += allowed.end - allowed.begin;

    const TileOrder order(span, first_row, last_row, skip_, KB);
    const auto negligible = [&](const TileOrder& o) {
      return skip_ && tail_is_negligible(b, kv, rows, o.left(), o.right());
    };
    if constexpr (Source::Format::loads_packets) {
      if (DecodeWalk<Source>::fits(g_, source_, rows)) {
        counters_.keys_visited +=
            decode_.run(source_, b, kv, rows, order, queries_.data(), row_stride_, softmax_,
                        output_.data(), value_stride_, negligible);
        for (index_t r = 0; r < rows; ++r) write_row(b, r, sink);
        return;
      }
    }
    counters_.keys_visited += prefill_walk(b, kv, rows, order, negligible);
    for (index_t r = 0; r < rows; ++r) write_row(b, r, sink);
  }

 private:
  /// The tiles of `order` through the two products; returns the keys visited.
  template <class Negligible>
  index_t prefill_walk(index_t b, index_t kv, index_t rows, TileOrder order,
                       Negligible&& negligible) {
    // The tiles, on a worker's first such task (a decode step needs none).
    if (scores_.empty()) {
      keys_.assign(std::size_t(KB * g_.head_dim), Acc(0));
      values_.assign(std::size_t(KB * value_stride_), Acc(0));
      value_row_.assign(std::size_t(value_stride_), Acc(0));
      scores_.assign(std::size_t(KB * (stride_ + Traits::line)), Acc(0));
    }
    const index_t row_packets = (rows + W - 1) / W;
    index_t visited = 0;
    KeyRange tile;
    while (order.next(tile)) {
      process_tile(b, kv, tile.begin, tile.end - tile.begin, rows, row_packets);
      visited += tile.end - tile.begin;
      if (negligible(order)) break;
    }
    return visited;
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
    const Acc* panels = value_panels(b, kv, t0, cols);
    const index_t value_packets = value_stride_ / W;
    for (index_t j0 = 0; j0 < value_packets; j0 += NP) {
      const index_t packets = std::min<index_t>(NP, value_packets - j0);
      const Acc* panel = panels + j0 * W * KB;
      for (index_t r0 = 0; r0 < rows; r0 += MR) {
        const KeyRange columns = softmax_.columns(r0, MR);
        if (columns.empty()) continue;
        micro_tile_columns<Packet, MR, NP, true>(
            packets,
            StridedOperand<Acc>{scores_.data() + columns.begin * row_stride_ + r0, 1, row_stride_},
            panel + columns.begin * packets * W, packets * W, columns.end - columns.begin,
            output_.data() + r0 * value_stride_ + j0 * W, value_stride_, StoreTile{}, r0, j0);
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
        bound += tail_weight(query_norms_[r], source_.norm_before(b, kv, left), slope,
                             p - g_.key_position(std::min(left, keys.end) - 1) - offset, max,
                             round_off_);
      if (std::max(right, keys.begin) < keys.end)
        bound +=
            tail_weight(query_norms_[r], source_.norm_from(b, kv, right), slope,
                        g_.key_position(std::max(right, keys.begin)) - p - offset, max, round_off_);
      if (!(bound <= tolerance * double(softmax_.sum(r)))) return false;  // NaN: keep walking
    }
    return true;
  }

  /// Row r of the query block into column r of Qᵀ, scaled: the bias is added after the scale,
  /// as in FlashAttention.
  void load_query(index_t b, index_t r) {
    const Q* src = q_.row(b, queries_of_[r], heads_of_[r]);
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
  /// Acc one stride apart and the micro-tiles stay inside them, else converted into scratch.
  StridedOperand<Acc> key_tile(index_t b, index_t kv, index_t t0, index_t cols) {
    if constexpr (std::is_same<Storage, Acc>::value) {
      const Acc* first;
      index_t stride;
      if (source_.contiguous() && cols % MR == 0 &&
          source_.keys(b, kv).run(t0, cols, first, stride))
        return {first, stride, 1};
    }
    for (index_t c = 0; c < cols; ++c)
      source_.key_to_acc(b, kv, t0 + c, keys_.data() + c * g_.head_dim);
    return {keys_.data(), g_.head_dim, 1};
  }

  /// Values [t0, t0 + cols) in Acc as panels of NP packets (the last one narrower): panel j0 / NP
  /// holds packets [j0, j0 + NP) of every key of the tile, one key after the other, at
  /// values_ + j0 W KB. A pass of P V reads one panel, contiguous and small enough for L1, once
  /// per micro-tile of rows: value rows read in place, a power-of-two stride apart (BSHD), would
  /// fall into a few of L1's sets and come from L2 each time (and rows a page apart cost a TLB
  /// miss each).
  const Acc* value_panels(index_t b, index_t kv, index_t t0, index_t cols) {
    const index_t value_packets = value_stride_ / W;
    const auto scatter = [&](index_t c, const Acc* row) {
      for (index_t j0 = 0; j0 < value_packets; j0 += NP) {
        const index_t width = std::min<index_t>(NP, value_packets - j0) * W;
        std::copy_n(row + j0 * W, width, values_.data() + j0 * W * KB + c * width);
      }
    };
    if constexpr (std::is_same<Storage, Acc>::value) {
      const Acc* first;
      index_t stride;
      if (source_.contiguous() && g_.value_dim % W == 0 &&
          source_.values(b, kv).run(t0, cols, first, stride)) {
        for (index_t c = 0; c < cols; ++c) scatter(c, first + c * stride);
        return values_.data();
      }
    }
    // Converted a row at a time; the row's padding past value_dim stays zero.
    for (index_t c = 0; c < cols; ++c) {
      source_.value_to_acc(b, kv, t0 + c, value_row_.data());
      scatter(c, value_row_.data());
    }
    return values_.data();
  }

  /// Row r's output, and its lse with the bias offset put back (in double); with a learned sink
  /// (sinks.hpp) joined. A split row's partial (PartialLse) keeps its lse relative to the offset
  /// and has no sink (split_kv.hpp joins it after the merge).
  template <class Out, class Lse>
  void write_row(index_t b, index_t r, const RowSink<Out, Lse>& sink) const {
    const Acc sum = softmax_.sum(r), max = softmax_.max(r);
    const index_t offset = softmax_.offset(r), distance = offset < 0 ? -offset : offset;
    // A row with no allowed key has sum 0: its output is 0, never 0/0, and never the 0 x NaN
    // that a NaN value in a tile other rows attend leaves in its accumulator.
    const bool empty = sum == Acc(0);
    double lse = empty ? -std::numeric_limits<double>::infinity()
                       : double(max) + std::log(double(sum)) -
                             double(softmax_.slope(r)) * double(distance);
    Acc inverse = empty ? Acc(0) : Acc(1) / sum;
    if (g_.has_sinks()) {
      const SinkFold fold = fold_sink(lse, double(g_.sink_logits[std::size_t(heads_of_[r])]));
      lse = fold.lse;
      inverse = empty ? Acc(0) : Acc(fold.factor / double(sum));
    }
    const Acc* o = output_.data() + r * value_stride_;
    Out* dst = sink.out.row(b, queries_of_[r], heads_of_[r]);
    for (index_t d = 0; d < g_.value_dim; ++d)
      dst[d * sink.out.strides[3]] = empty ? Out(0) : Out(o[d] * inverse);
    if (sink.lse != nullptr)
      store_lse(sink.lse[b * sink.lse_batch + heads_of_[r] * g_.seq_q + queries_of_[r]], lse, sum,
                max, distance);
  }

  static void store_lse(float& dst, double lse, Acc, Acc, index_t) { dst = float(lse); }
  static void store_lse(PartialLse& dst, double, Acc sum, Acc max, index_t distance) {
    dst = {sum == Acc(0) ? -std::numeric_limits<double>::infinity()
                         : double(max) + std::log(double(sum)),
           distance};
  }

  const Geometry& g_;
  const ForwardTasks& tasks_;
  TensorView<const Q> q_;
  const Source& source_;
  TaskCounters& counters_;
  bool skip_;                // the tail skip is on
  LogitRoundOff round_off_;  // of this call's logits, for the tail bound
  index_t stride_;           // query rows the scratch tiles can hold
  index_t row_stride_ = 0;   // query rows of this task's tiles: compact for short tasks (decode)
  index_t value_stride_;     // value_dim rounded up to whole packets
  scratch_vector<Acc> queries_, keys_, values_, value_row_, scores_, output_;
  TileSoftmax<Acc> softmax_;
  std::vector<index_t> queries_of_, heads_of_;
  std::vector<double> query_norms_;  // of the scaled query rows, for the tail bound
  DecodeWalk<Source> decode_;
};

}  // namespace detail
}  // namespace alibi
