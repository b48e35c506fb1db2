#pragma once
// Attention over sequences of a memory-budgeted PagedKVCache, with its certificate. A head that
// evicted keys holds its sink pages [0, sink_end) and its keys from evicted_end on; positions
// stay absolute. The walks take one key range per (batch row, kv head), so the call runs as two:
//   main:  the keys from each head's first kept one past the sinks, seen through a source that
//          starts each batch row at its earliest such key (page aligned; the query positions
//          shift with it, so every distance, and the bias, is unchanged) - a long-evicted row is
//          then not cut into chunks of keys that no longer exist;
//   sinks: rows with sink pages and evictions, over [0, sink_end) at their true positions;
// merged by their lse. Then per query row the bound on the weight the evicted keys could have
// carried (eviction_bound.hpp, with the row's lse), and only when no row exceeds
// Params::max_evicted_weight, out and lse are written.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../budget.hpp"
#include "../merge.hpp"
#include "../params.hpp"
#include "eviction_bound.hpp"
#include "geometry.hpp"
#include "page_pool.hpp"
#include "paged_source.hpp"
#include "split_kv.hpp"

namespace alibi {
namespace detail {

/// A paged source whose batch row b starts at token base[b] (a multiple of the page size) and
/// whose (b, kv) holds keys from first[b * heads + kv] (absolute) on.
template <class F>
class BudgetedSource {
 public:
  using Format = F;
  using Storage = typename F::Storage;
  using Acc = typename F::Acc;
  using Rows = PagedRows<Storage>;

  BudgetedSource(const PagedSource<F>& inner, std::vector<index_t> base, std::vector<index_t> first,
                 index_t heads, index_t page_size)
      : inner_(inner),
        base_(std::move(base)),
        first_(std::move(first)),
        heads_(heads),
        page_size_(page_size) {}

  Rows keys(index_t b, index_t kv) const { return shifted(inner_.keys(b, kv), b); }
  Rows values(index_t b, index_t kv) const { return shifted(inner_.values(b, kv), b); }
  Format key_format() const { return inner_.key_format(); }
  Format value_format() const { return inner_.value_format(); }
  index_t first_key(index_t b, index_t kv) const {
    return first_[std::size_t(b * heads_ + kv)] - base_[std::size_t(b)];
  }
  bool contiguous() const { return inner_.contiguous(); }
  void key_to_acc(index_t b, index_t kv, index_t t, Acc* dst) const {
    inner_.key_to_acc(b, kv, t + base_[std::size_t(b)], dst);
  }
  void value_to_acc(index_t b, index_t kv, index_t t, Acc* dst) const {
    inner_.value_to_acc(b, kv, t + base_[std::size_t(b)], dst);
  }
  bool has_norms() const { return inner_.has_norms(); }
  float norm_before(index_t b, index_t kv, index_t end) const {
    return inner_.norm_before(b, kv, end + base_[std::size_t(b)]);
  }
  float norm_from(index_t b, index_t kv, index_t begin) const {
    return inner_.norm_from(b, kv, begin + base_[std::size_t(b)]);
  }

 private:
  Rows shifted(Rows rows, index_t b) const {
    rows.pages += base_[std::size_t(b)] / page_size_;
    return rows;
  }

  const PagedSource<F>& inner_;
  std::vector<index_t> base_, first_;
  index_t heads_, page_size_;
};

/// Whether any of these sequences evicted keys (then the call takes budgeted_forward).
inline bool any_evicted(const std::vector<const PageTable*>& tables) {
  for (const PageTable* t : tables)
    for (const auto& head : t->heads)
      if (head.evicted_end > 0) return true;
  return false;
}

/// The call described at the top of this file. `g` is the call's geometry over the sequences'
/// full lengths (keys at their absolute positions); `ids` name the sequences in errors.
template <class T, class F>
void budgeted_forward(const char* fn, const Geometry& g, TensorView<const T> q,
                      const PagedSource<F>& inner, const std::vector<const PageTable*>& tables,
                      const std::vector<std::int64_t>& ids, index_t page_size, index_t sink_end,
                      TensorView<T> out, float* lse, const Params& params) {
  const index_t B = g.batch, Hkv = g.heads_kv, Hq = g.heads_q, Sq = g.seq_q, Dv = g.value_dim;
  std::vector<index_t> base(static_cast<std::size_t>(B), 0),
      first(static_cast<std::size_t>(B * Hkv), 0), sink_keys(static_cast<std::size_t>(B), 0);
  for (index_t b = 0; b < B; ++b) {
    const PageTable& table = *tables[std::size_t(b)];
    bool evicted = false;
    for (const auto& head : table.heads) evicted = evicted || head.evicted_end > 0;
    const bool split = evicted && sink_end > 0;
    index_t earliest = table.length;
    for (index_t kv = 0; kv < Hkv; ++kv) {
      const index_t end = table.heads[std::size_t(kv)].evicted_end;
      index_t& from = first[std::size_t(b * Hkv + kv)];
      from = end > 0 ? end : split ? std::min(sink_end, table.length) : 0;
      earliest = std::min(earliest, from);
    }
    base[std::size_t(b)] = earliest / page_size * page_size;
    if (split) sink_keys[std::size_t(b)] = std::min(sink_end, table.length);
  }

  // The queries in float (exact), so that both parts and their merge stay in float.
  std::vector<float> queries(std::size_t(B * Sq * Hq * g.head_dim));
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < Sq; ++i)
      for (index_t h = 0; h < Hq; ++h)
        for (index_t d = 0; d < g.head_dim; ++d)
          queries[std::size_t(((b * Sq + i) * Hq + h) * g.head_dim + d)] = float(q(b, i, h, d));
  const TensorView<const float> qf = make_view<const float>(queries.data(), B, Sq, Hq, g.head_dim);
  const std::size_t rows = std::size_t(B * Hq * Sq);
  std::vector<float> main_out(std::size_t(B * Sq * Hq * Dv)), main_lse(rows);
  const TensorView<float> main_view = make_view(main_out.data(), B, Sq, Hq, Dv);

  Geometry main = g;
  main.batch_query_offsets.resize(std::size_t(B));
  main.seqlens_k.resize(std::size_t(B));
  main.seq_k = 0;
  for (index_t b = 0; b < B; ++b) {
    main.batch_query_offsets[std::size_t(b)] = g.query_position(b, 0) - base[std::size_t(b)];
    main.seqlens_k[std::size_t(b)] = g.valid_keys(b) - base[std::size_t(b)];
    main.seq_k = std::max(main.seq_k, main.seqlens_k[std::size_t(b)]);
  }
  const BudgetedSource<F> kept(inner, base, first, Hkv, page_size);
  AttentionStats main_stats, sink_stats;
  forward(main, qf, kept, main_view, main_lse.data(), params.num_threads, &main_stats);

  if (std::any_of(sink_keys.begin(), sink_keys.end(), [](index_t n) { return n > 0; })) {
    Geometry sinks = g;
    sinks.sink_logits.clear();  // joined once, in the main part
    sinks.batch_query_offsets.resize(std::size_t(B));
    sinks.seqlens_k = sink_keys;
    sinks.seq_k = *std::max_element(sink_keys.begin(), sink_keys.end());
    for (index_t b = 0; b < B; ++b)
      sinks.batch_query_offsets[std::size_t(b)] = g.query_position(b, 0);
    std::vector<float> sink_out(main_out.size()), sink_lse(rows);
    const TensorView<float> sink_view = make_view(sink_out.data(), B, Sq, Hq, Dv);
    forward(sinks, qf, inner, sink_view, sink_lse.data(), params.num_threads, &sink_stats);
    merge(TensorView<const float>(main_view), main_lse.data(), TensorView<const float>(sink_view),
          sink_lse.data(), main_view, main_lse.data());
  }

  // The certificate of every row, before anything is written.
  double worst = 0;
  index_t worst_b = 0, worst_h = 0;
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < Hq; ++h) {
      const auto& head = tables[std::size_t(b)]->heads[std::size_t(g.kv_head(h))];
      if (head.evicted_end == 0) continue;
      const EvictedKeys evicted{sink_end, head.evicted_end, double(head.evicted_norm)};
      for (index_t i = 0; i < Sq; ++i) {
        double squares = 0;
        for (index_t d = 0; d < g.head_dim; ++d) {
          const double x = double(qf(b, i, h, d)) * double(g.scale);
          squares += x * x;
        }
        const index_t p = g.query_position(b, i);
        const KeyRange allowed = g.allowed_keys(b, p);
        const double bound =
            evicted_weight(std::sqrt(squares), g.slope(b, h), p, allowed.begin, allowed.end,
                           evicted, double(main_lse[std::size_t((b * Hq + h) * Sq + i)]));
        if (bound > worst || std::isnan(bound)) worst = bound, worst_b = b, worst_h = h;
      }
    }
  if (params.stats != nullptr) {
    params.stats->keys_visited = main_stats.keys_visited + sink_stats.keys_visited;
    params.stats->keys_allowed = main_stats.keys_allowed + sink_stats.keys_allowed;
    params.stats->evicted_weight_bound = worst;
  }
  if (params.max_evicted_weight > 0 && !(worst <= params.max_evicted_weight))
    throw BudgetExceeded(fn, ids[std::size_t(worst_b)], worst_h, worst, params.max_evicted_weight);

  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < Sq; ++i)
      for (index_t h = 0; h < Hq; ++h) {
        T* dst = out.row(b, i, h);
        const float* src = &main_out[std::size_t(((b * Sq + i) * Hq + h) * Dv)];
        for (index_t d = 0; d < Dv; ++d) dst[d * out.strides[3]] = T(src[d]);
      }
  if (lse != nullptr) std::copy(main_lse.begin(), main_lse.end(), lse);
}

}  // namespace detail
}  // namespace alibi
