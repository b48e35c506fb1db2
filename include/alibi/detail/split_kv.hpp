#pragma once
// How a forward call's tasks are scheduled. A call runs its tasks (query blocks of each
// (batch row, kv head), forward.hpp) in one parallel loop. A short q against long rows (a decode
// step, flash-decoding) would leave threads idle and walk very long rows in one task: there each
// row's keys are cut into chunks of decode_chunk from its newest key, the chunks run as tasks of
// their own, and their partial results merge into the row's. Chunks are fixed in size and merge
// in order, so the result does not depend on the thread count. Rows of any lengths share the
// loops (continuous batching: a short row is one chunk and never waits on a long one).
//
// With the tail skip, the nearest chunk of every row runs first; a row whose other keys are
// provably negligible against it (the tail bound, half the tolerance each side) is done, and the
// other chunks of the rest run as one more parallel loop. A step then costs O(keys visited).

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "../params.hpp"
#include "forward.hpp"
#include "geometry.hpp"
#include "kernel_traits.hpp"
#include "kv_source.hpp"
#include "numeric.hpp"
#include "parallel.hpp"
#include "sinks.hpp"
#include "tail_bound.hpp"

namespace alibi {
namespace detail {

/// Keys per chunk of a split row: fixed (not derived from the thread count) so that the result
/// does not depend on it.
constexpr index_t decode_chunk = 16384;
/// Queries per batch row up to which long rows are split (decode steps, a few draft tokens).
constexpr index_t split_max_queries = 16;
/// Keys per chunk beyond which rows of any call are split: the kernels hold distances from a
/// tile to a row (its bias offset taken out) in float, exact below 2^24, so no call may walk a
/// row over more keys than that. 2^23 keeps every in-chunk distance below 2^24.
constexpr index_t exact_chunk = index_t(1) << 23;

/// Each batch row's keys (those any of its queries may attend) cut into chunks of decode_chunk
/// from the newest.
class KeyChunks {
 public:
  KeyChunks() = default;  // no row split
  KeyChunks(const Geometry& g, index_t chunk)
      : chunk_(chunk), span_(std::size_t(g.batch)), count_(span_.size(), 1) {
    for (index_t b = 0; b < g.batch; ++b) {
      KeyRange hull{std::numeric_limits<index_t>::max(), std::numeric_limits<index_t>::min()};
      for (index_t i = 0; i < g.seq_q; ++i) {
        const KeyRange keys = g.query_keys(b, i);
        if (keys.empty()) continue;
        hull.begin = std::min(hull.begin, keys.begin);
        hull.end = std::max(hull.end, keys.end);
      }
      if (hull.empty()) hull = KeyRange{};
      span_[std::size_t(b)] = hull;
      count_[std::size_t(b)] = std::max<index_t>(1, (hull.end - hull.begin + chunk - 1) / chunk);
    }
  }

  index_t count(index_t b) const { return count_[std::size_t(b)]; }
  bool any_split() const {
    return std::any_of(count_.begin(), count_.end(), [](index_t n) { return n > 1; });
  }
  /// Chunk c of row b: chunk 0 holds its newest keys.
  KeyRange chunk(index_t b, index_t c) const {
    const KeyRange span = span_[std::size_t(b)];
    const index_t end = span.end - c * chunk_;
    return {std::max(span.begin, end - chunk_), end};
  }

 private:
  index_t chunk_ = 0;
  std::vector<KeyRange> span_;
  std::vector<index_t> count_;
};

/// Whether every query of batch row b may leave out its keys before `begin`: their weight is at
/// most tolerance/2 of the row's sum over the rest, whose lse is `lse` ([Hq, Sq]).
template <class Q, class Source>
bool rest_is_negligible(const Geometry& g, const TensorView<const Q>& q, const Source& source,
                        index_t b, index_t begin, const PartialLse* lse) {
  using Acc = accum_t<Q>;
  const LogitRoundOff round_off =
      LogitRoundOff::of(std::numeric_limits<Acc>::epsilon() / 2, g.head_dim);
  for (index_t h = 0; h < g.heads_q; ++h)
    for (index_t i = 0; i < g.seq_q; ++i) {
      const index_t p = g.query_position(b, i);
      const KeyRange keys = g.query_keys(b, i);
      if (keys.begin >= std::min(begin, keys.end)) continue;  // nothing left for it
      double squares = 0;
      for (index_t d = 0; d < g.head_dim; ++d) {
        const double x = double(Acc(q(b, i, h, d))) * double(g.scale);
        squares += x * x;
      }
      // Distances relative to the row's bias offset, as its lse value is.
      const PartialLse& row = lse[h * g.seq_q + i];
      const index_t distance = p - g.key_position(std::min(begin, keys.end) - 1);
      const double bound =
          distance <= 0
              ? HUGE_VAL
              : tail_weight(std::sqrt(squares), source.norm_before(b, g.kv_head(h), begin),
                            g.slope(b, h), distance - row.distance, row.value, round_off);
      if (!(bound <= g.tail_tolerance / 2)) return false;  // NaN: keep going
    }
  return true;
}

/// Merges the partial row (out_b, lse_b) into (out_a, lse_a) for a row of slope `slope`, in Acc
/// and exactly at any distance: the difference of the two lse is taken with their bias offsets
/// apart (an integer difference), and the result stays relative to a's offset.
template <class Acc>
void merge_partial(Acc* out_a, PartialLse& lse_a, const Acc* out_b, const PartialLse& lse_b,
                   index_t value_dim, double slope) {
  const double minus_inf = -std::numeric_limits<double>::infinity();
  if (lse_b.value == minus_inf) return;  // b adds nothing (and a NaN in a stays)
  if (lse_a.value == minus_inf) {
    std::copy(out_b, out_b + value_dim, out_a);
    lse_a = lse_b;
    return;
  }
  // lse_a - lse_b = (a.value - b.value) + slope (b.distance - a.distance).
  const double delta = lse_a.value - lse_b.value + slope * double(lse_b.distance - lse_a.distance);
  if (std::isnan(delta)) {
    std::fill(out_a, out_a + value_dim, std::numeric_limits<Acc>::quiet_NaN());
    lse_a.value = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  const double wa = delta >= 0 ? 1 : std::exp(delta), wb = delta >= 0 ? std::exp(-delta) : 1;
  const double total = wa + wb;
  for (index_t d = 0; d < value_dim; ++d)
    out_a[d] = Acc((wa * double(out_a[d]) + wb * double(out_b[d])) / total);
  // log(e^lse_a + e^lse_b) - lse_a, added to a's value: a's offset stays.
  lse_a.value += std::log(total) - (delta >= 0 ? 0 : delta);
}

/// Runs the fused forward of q against `source` into out and lse (see the top of this file).
template <class Q, class Source>
void forward(const Geometry& g, TensorView<const Q> q, const Source& source, TensorView<Q> out,
             float* lse, int threads, AttentionStats* stats) {
  using Acc = accum_t<Q>;
  using Worker = ForwardWorker<Q, Source>;
  const ForwardTasks tasks = ForwardTasks::make<Acc>(g);
  TaskCounters counters;
  const auto finish = [&] {
    if (stats != nullptr) *stats = {counters.keys_visited, counters.keys_allowed};
  };
  const KeyChunks chunks = KeyChunks(g, g.seq_q <= split_max_queries ? decode_chunk : exact_chunk);
  if (!chunks.any_split()) {
    const RowSink<Q> sink{out, lse, g.heads_q * g.seq_q};
    parallel_tasks(tasks.count, threads, [&] {
      return [&, worker = Worker(g, tasks, q, source, counters)](index_t task) mutable {
        worker(task, sink);
      };
    });
    return finish();
  }

  // Each chunk's tasks skip within it with half the tolerance; the other half is for the chunks
  // left out (rest_is_negligible). A learned sink joins the merged row once, at the end (the
  // partials are over keys only: their lse stays relative to their bias offsets).
  Geometry part = g;
  part.tail_tolerance = g.tail_tolerance / 2;
  part.sink_logits.clear();
  const bool skip = source.has_norms() && wants_tail_skip(g, kernel_traits<Acc>::key_block);
  const index_t row_lse = g.heads_q * g.seq_q, row_out = g.seq_q * g.heads_q * g.value_dim;
  // Partial results are kept and merged in Acc, whatever the storage of out, with their lse
  // relative to their bias offsets.
  std::vector<Acc> first(std::size_t(g.batch * row_out));
  std::vector<PartialLse> first_lse(std::size_t(g.batch * row_lse));
  const RowSink<Acc, PartialLse> first_sink{
      make_view(first.data(), g.batch, g.seq_q, g.heads_q, g.value_dim), first_lse.data(), row_lse};
  parallel_tasks(tasks.count, threads, [&] {
    return [&, worker = Worker(part, tasks, q, source, counters)](index_t task) mutable {
      const index_t pair = task / tasks.blocks, block = tasks.blocks - 1 - task % tasks.blocks;
      const index_t b = pair / g.heads_kv;
      worker.run(b, pair % g.heads_kv, block, chunks.chunk(b, 0), true, first_sink);
    };
  });

  // The other chunks of the rows that need them, each a partial [1, Sq, Hq, Dv] with its lse.
  struct Part {
    index_t b, c;
  };
  std::vector<Part> parts;
  for (index_t b = 0; b < g.batch; ++b) {
    if (chunks.count(b) == 1) continue;
    if (skip && rest_is_negligible(g, q, source, b, chunks.chunk(b, 0).begin,
                                   first_lse.data() + b * row_lse))
      continue;
    for (index_t c = 1; c < chunks.count(b); ++c) parts.push_back({b, c});
  }
  if (!parts.empty()) {
    std::vector<Acc> partial(parts.size() * std::size_t(row_out));
    std::vector<PartialLse> partial_lse(parts.size() * std::size_t(row_lse));
    const auto sink_of = [&](std::size_t p) {
      // Batch stride 0: every batch row's rows land in this part's buffer.
      return RowSink<Acc, PartialLse>{{partial.data() + p * std::size_t(row_out),
                                       {g.batch, g.seq_q, g.heads_q, g.value_dim},
                                       {0, g.heads_q * g.value_dim, g.value_dim, 1}},
                                      partial_lse.data() + p * std::size_t(row_lse),
                                      0};
    };
    const index_t per_part = g.heads_kv * tasks.blocks;
    parallel_tasks(index_t(parts.size()) * per_part, threads, [&] {
      return [&, worker = Worker(part, tasks, q, source, counters)](index_t task) mutable {
        const std::size_t p = std::size_t(task / per_part);
        const index_t kv = task % per_part / tasks.blocks, block = task % tasks.blocks;
        worker.run(parts[p].b, kv, block, chunks.chunk(parts[p].b, parts[p].c), false, sink_of(p));
      };
    });
    // In chunk order per row: the same sums whatever the thread count.
    for (std::size_t p = 0; p < parts.size(); ++p) {
      const index_t b = parts[p].b;
      for (index_t i = 0; i < g.seq_q; ++i)
        for (index_t h = 0; h < g.heads_q; ++h) {
          const index_t out_at = (i * g.heads_q + h) * g.value_dim, lse_at = h * g.seq_q + i;
          merge_partial(first.data() + b * row_out + out_at,
                        first_lse[std::size_t(b * row_lse + lse_at)],
                        partial.data() + p * std::size_t(row_out) + out_at,
                        partial_lse[p * std::size_t(row_lse) + std::size_t(lse_at)], g.value_dim,
                        double(g.slope(b, h)));
        }
    }
  }
  for (index_t b = 0; b < g.batch; ++b)
    for (index_t i = 0; i < g.seq_q; ++i)
      for (index_t h = 0; h < g.heads_q; ++h) {
        const index_t at = (b * g.heads_q + h) * g.seq_q + i;
        const PartialLse& row = first_lse[std::size_t(at)];
        double row_lse = row.value - double(g.slope(b, h)) * double(row.distance), factor = 1;
        if (g.has_sinks()) {
          const SinkFold fold = fold_sink(row_lse, double(g.sink_logits[std::size_t(h)]));
          row_lse = fold.lse;
          factor = fold.factor;
        }
        const Acc* src = first.data() + ((b * g.seq_q + i) * g.heads_q + h) * g.value_dim;
        Q* dst = out.row(b, i, h);
        for (index_t d = 0; d < g.value_dim; ++d)
          dst[d * out.strides[3]] = factor == 1 ? Q(src[d]) : Q(double(src[d]) * factor);
        if (lse != nullptr) lse[at] = float(row_lse);
      }
  finish();
}

/// The forward of strided views: with the tail skip, against the norm bounds `kept` (a cache's)
/// or, without them, bounds measured here in one pass over k.
template <class T>
void forward_views(const Geometry& g, TensorView<const T> q, TensorView<const T> k,
                   TensorView<const T> v, TensorView<T> out, float* lse, int threads,
                   AttentionStats* stats, const KeyNormBounds* kept = nullptr) {
  ViewSource<T> source(k, v);
  std::optional<KeyNormBounds> measured;
  if (wants_tail_skip(g, kernel_traits<accum_t<T>>::key_block)) {
    if (kept == nullptr) {
      measured.emplace(KeyNormBounds::measure(k, threads, g.seqlens_k, !g.causal));
      kept = &*measured;
    }
    source.set_norms(kept);
  }
  forward(g, q, source, out, lse, threads, stats);
}

}  // namespace detail
}  // namespace alibi
