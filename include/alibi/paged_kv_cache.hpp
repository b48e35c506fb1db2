#pragma once
// A paged KV cache shared by many sequences (vLLM's block tables on a CPU), and attention over any
// batch of its sequences. Storage: detail/page_pool.hpp; how the walks read it:
// detail/paged_source.hpp; the storage formats: detail/kv_format.hpp.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "budget.hpp"
#include "detail/budget_plan.hpp"
#include "detail/budgeted_attention.hpp"
#include "detail/kv_format.hpp"
#include "detail/numeric.hpp"
#include "detail/page_pool.hpp"
#include "detail/paged_source.hpp"
#include "detail/split_kv.hpp"
#include "detail/tail_bound.hpp"
#include "detail/validate.hpp"
#include "params.hpp"
#include "tensor_view.hpp"

namespace alibi {

/// How a PagedKVCache stores keys and values. Attention reads each format in registers (never a
/// float copy of the cache) and computes over exactly what PagedKVCache::read returns.
/// - f32: as appended. f16, bf16: rounded to nearest even (2 bytes per element).
/// - int8: symmetric, one float scale per block of 32 elements of a row (the last block of a row
///   may be shorter), each element within half a step (scale / 2) of its appended value; 1.125
///   bytes per element when the row length is a multiple of 32.
enum class KVFormat { f32, f16, bf16, int8 };

/// A sequence of a PagedKVCache. Ids are never reused: a released id stays unknown.
using SequenceId = std::int64_t;

namespace detail {
struct PagedAccess;

/// Calls f with the storage format of `format` (a detail::*Format value of row length dim).
template <class F>
decltype(auto) with_format(KVFormat format, index_t dim, F&& f) {
  switch (format) {
    case KVFormat::f16:
      return f(ElementFormat<Eigen::half>{dim});
    case KVFormat::bf16:
      return f(ElementFormat<Eigen::bfloat16>{dim});
    case KVFormat::int8:
      return f(Int8Format{dim});
    case KVFormat::f32:
    default:
      return f(ElementFormat<float>{dim});
  }
}
}  // namespace detail

/// Keys and values of one attention layer for many sequences, in pages of `page_size` tokens of
/// one kv head (its keys, then its values, head-major: a decode step streams each page). A
/// sequence is a block table over pages; fork() shares every page of its parent (a common system
/// prompt is stored once) and a page is copied only when a sequence appends into a page it shares
/// (its partial last page: copy-on-write). Key norms of the stored keys are kept per block of 64
/// tokens as they arrive, so attention with the tail skip costs O(keys visited).
///
/// Const member functions (and attention over the cache) never write to it: they are safe from
/// several threads at once. Bad input throws std::invalid_argument naming the argument and the
/// sizes seen, with the cache unchanged.
///
///     alibi::PagedKVCache cache({/*kv_heads*/ 8, /*head_dim*/ 128});
///     alibi::SequenceId chat = cache.add_sequence();
///     cache.append(chat, k_prompt, v_prompt);              // [1, n, 8, 128]
///     alibi::SequenceId other = cache.fork(chat);          // shares the prompt's pages
///     cache.append(other, k_token, v_token);               // [1, 1, 8, 128]
///     alibi::attention(q_token, cache, {other}, out_token);
class PagedKVCache {
 public:
  using SequenceId = alibi::SequenceId;

  /// What a cache holds and how: `Options{kv_heads, head_dim}` with the rest defaulted, or any
  /// prefix of the fields in this order.
  struct Options {
    index_t kv_heads = 0;
    index_t head_dim = 0;
    index_t value_dim = 0;   ///< 0: head_dim
    index_t page_size = 64;  ///< tokens per page, a multiple of 64
    KVFormat format = KVFormat::f32;
    /// The memory budget in bytes (bytes_used() never exceeds it); 0 is unbounded. When an
    /// append would exceed it, the cache frees whole pages from the front of each (sequence, kv
    /// head), keeping each head the distance its slope needs (see set_budget). It must hold, for
    /// every sequence, its sink pages and one more page per kv head.
    std::size_t max_bytes = 0;
    /// The Hq query-head slopes the budget plans keep distances for (a multiple of kv_heads,
    /// finite, >= 0; with GQA a kv head plans for its shallowest query head). Empty: one window
    /// for every head.
    std::vector<float> slopes;
    /// Tokens at the front of every sequence never evicted (StreamingLLM's attention sinks); the
    /// whole pages holding them are kept.
    index_t sink_tokens = 0;

    // A constructor rather than aggregate initialisation: `Options{8, 128}` then draws no
    // missing-initializer warning in users' -Wextra builds.
    Options(index_t kv_heads_ = 0, index_t head_dim_ = 0, index_t value_dim_ = 0,
            index_t page_size_ = 64, KVFormat format_ = KVFormat::f32, std::size_t max_bytes_ = 0,
            std::vector<float> slopes_ = {}, index_t sink_tokens_ = 0)
        : kv_heads(kv_heads_),
          head_dim(head_dim_),
          value_dim(value_dim_),
          page_size(page_size_),
          format(format_),
          max_bytes(max_bytes_),
          slopes(std::move(slopes_)),
          sink_tokens(sink_tokens_) {}
  };

  explicit PagedKVCache(Options options) : options_(std::move(options)) {
    const char* fn = "alibi::PagedKVCache";
    Options& o = options_;
    if (o.kv_heads < 1 || o.head_dim < 1 || o.value_dim < 0 || o.kv_heads > (index_t(1) << 20) ||
        o.head_dim > (index_t(1) << 20) || o.value_dim > (index_t(1) << 20))
      detail::fail(fn,
                   "options need kv_heads, head_dim >= 1 and value_dim >= 0 (each at most "
                   "2^20), got kv_heads " +
                       std::to_string(o.kv_heads) + ", head_dim " + std::to_string(o.head_dim) +
                       ", value_dim " + std::to_string(o.value_dim));
    if (o.page_size < 64 || o.page_size % 64 != 0 || o.page_size > (index_t(1) << 20))
      detail::fail(fn, "options.page_size must be a positive multiple of 64 (at most 2^20), got " +
                           std::to_string(o.page_size));
    if (o.format != KVFormat::f32 && o.format != KVFormat::f16 && o.format != KVFormat::bf16 &&
        o.format != KVFormat::int8)
      detail::fail(fn, "options.format is not a KVFormat: " + std::to_string(int(o.format)));
    if (o.sink_tokens < 0)
      detail::fail(fn, "options.sink_tokens must be >= 0, got " + std::to_string(o.sink_tokens));
    if (o.value_dim == 0) o.value_dim = o.head_dim;
    if (!o.slopes.empty() && o.slopes.size() % std::size_t(o.kv_heads) != 0)
      detail::fail(fn, "options.slopes has " + std::to_string(o.slopes.size()) +
                           " values, not a multiple of the " + std::to_string(o.kv_heads) +
                           " kv heads (it holds the Hq query-head slopes)");
    for (std::size_t i = 0; i < o.slopes.size(); ++i)
      if (!std::isfinite(o.slopes[i]) || o.slopes[i] < 0)
        detail::fail(fn, "options.slopes[" + std::to_string(i) + "] must be finite and >= 0, got " +
                             std::to_string(o.slopes[i]));
    const index_t key_bytes =
        detail::with_format(o.format, o.head_dim, [](auto format) { return format.row_bytes(); });
    const index_t value_bytes =
        detail::with_format(o.format, o.value_dim, [](auto format) { return format.row_bytes(); });
    layout_ = detail::PageLayout(o.page_size, key_bytes, value_bytes);
    pool_ = detail::PagePool(layout_.page_bytes());
    check_budget(fn, "options.max_bytes", o.max_bytes);
  }

  /// Sets the memory budget (0: unbounded), evicting at once what no longer fits. Eviction frees
  /// whole pages from the front of each (sequence, kv head), past its sink pages, choosing the
  /// heads' keep distances so that the largest possible evicted weight is smallest: slope x
  /// distance (plus log(1 - e^-slope)) is equalised over all heads of all sequences. Each head
  /// remembers the largest norm of the keys it evicted and the position just past them
  /// (evicted_end); positions stay absolute, and a fork shares its parent's evicted state.
  /// Attention over evicted sequences reports the resulting certificate
  /// (AttentionStats::evicted_weight_bound, Params::max_evicted_weight). Throws
  /// std::invalid_argument, with nothing changed, for a budget below every sequence's sink pages
  /// plus one page per kv head.
  void set_budget(std::size_t bytes) {
    const char* fn = "alibi::PagedKVCache::set_budget";
    check_budget(fn, "bytes", bytes);
    if (bytes != 0) {
      check_sequences_fit(fn, bytes, nullptr);
      make_room(fn, bytes, nullptr, 0, 0);
    }
    options_.max_bytes = bytes;
  }
  std::size_t max_bytes() const { return options_.max_bytes; }

  /// Of kv head `kv_head` of sequence `id`: the position just past the keys the budget evicted
  /// (0: none evicted; they were [sink_end(), evicted_end)), and the largest of their norms.
  index_t evicted_end(SequenceId id, index_t kv_head) const {
    return head_of("alibi::PagedKVCache::evicted_end", id, kv_head).evicted_end;
  }
  float evicted_norm(SequenceId id, index_t kv_head) const {
    return head_of("alibi::PagedKVCache::evicted_norm", id, kv_head).evicted_norm;
  }
  /// Tokens at the front never evicted: the whole pages holding options().sink_tokens.
  index_t sink_end() const {
    return (options_.sink_tokens + options_.page_size - 1) / options_.page_size *
           options_.page_size;
  }

  /// A new, empty sequence.
  SequenceId add_sequence() {
    detail::PageTable table;
    table.heads.resize(std::size_t(options_.kv_heads));
    sequences_.emplace(next_id_, std::move(table));
    return next_id_++;
  }

  /// A new sequence holding what `parent` holds, sharing its pages (none is copied here; the
  /// first append of either into a page they share copies that page).
  SequenceId fork(SequenceId parent) {
    const detail::PageTable& table = find("alibi::PagedKVCache::fork", "parent", parent);
    detail::PageTable copy = table;
    sequences_.emplace(next_id_, std::move(copy));
    for (const auto& head : table.heads)
      for (const auto page : head.pages)
        if (page >= 0) pool_.retain(page);  // evicted pages (-1) are shared as gone
    return next_id_++;
  }

  /// Drops a sequence: its pages go back to the pool unless another sequence shares them.
  void release(SequenceId id) {
    const auto it = sequences_.find(id);
    if (it == sequences_.end()) unknown("alibi::PagedKVCache::release", "id", id);
    for (const auto& head : it->second.heads)
      for (const auto page : head.pages)
        if (page >= 0) pool_.release(page);
    sequences_.erase(it);
  }

  /// Appends n tokens to sequence `id`: k [1, n, Hkv, D] and v [1, n, Hkv, Dv], any strides,
  /// converted to the cache's format (float, half or bfloat16 input).
  void append(SequenceId id, TensorView<const float> k, TensorView<const float> v) {
    append_rows(id, k, v);
  }
  void append(SequenceId id, TensorView<const Eigen::half> k, TensorView<const Eigen::half> v) {
    append_rows(id, k, v);
  }
  void append(SequenceId id, TensorView<const Eigen::bfloat16> k,
              TensorView<const Eigen::bfloat16> v) {
    append_rows(id, k, v);
  }

  /// Tokens held by sequence `id`.
  index_t length(SequenceId id) const {
    return find("alibi::PagedKVCache::length", "id", id).length;
  }

  /// Bytes of the pages held by any sequence (a shared page once), scales included.
  std::size_t bytes_used() const { return pool_.held() * std::size_t(layout_.page_bytes()); }

  /// The stored keys and values of tokens [begin, end) of sequence `id`, dequantised to float:
  /// k receives [end - begin, Hkv, D] and v [end - begin, Hkv, Dv], contiguous (either may be null
  /// when not wanted). Attention over the cache computes over exactly these values. Tokens a
  /// head evicted cannot be read (std::invalid_argument; read_head reads one head).
  void read(SequenceId id, index_t begin, index_t end, float* k, float* v) const {
    const char* fn = "alibi::PagedKVCache::read";
    const detail::PageTable& table = find(fn, "id", id);
    check_readable(fn, table, begin, end, 0, options_.kv_heads);
    read_heads(table, begin, end, 0, options_.kv_heads, k, v, options_.kv_heads);
  }

  /// read() of one kv head: k receives [end - begin, D] and v [end - begin, Dv].
  void read_head(SequenceId id, index_t kv_head, index_t begin, index_t end, float* k,
                 float* v) const {
    const char* fn = "alibi::PagedKVCache::read_head";
    const detail::PageTable& table = find(fn, "id", id);
    if (kv_head < 0 || kv_head >= options_.kv_heads)
      detail::fail(fn, "kv_head " + std::to_string(kv_head) + " is not in [0, " +
                           std::to_string(options_.kv_heads) + ")");
    check_readable(fn, table, begin, end, kv_head, kv_head + 1);
    read_heads(table, begin, end, kv_head, kv_head + 1, k, v, 1);
  }

 private:
  void check_readable(const char* fn, const detail::PageTable& table, index_t begin, index_t end,
                      index_t head_begin, index_t head_end) const {
    if (begin < 0 || end < begin || end > table.length)
      detail::fail(fn, "tokens [" + std::to_string(begin) + ", " + std::to_string(end) +
                           ") are not inside [0, " + std::to_string(table.length) +
                           "), the sequence's length");
    for (index_t h = head_begin; h < head_end; ++h) {
      const index_t gone = table.heads[std::size_t(h)].evicted_end;
      if (gone > 0 && begin < gone && end > sink_end() && begin < end)
        detail::fail(fn, "tokens [" + std::to_string(begin) + ", " + std::to_string(end) +
                             ") include tokens kv head " + std::to_string(h) +
                             " evicted under the budget, [" + std::to_string(sink_end()) + ", " +
                             std::to_string(gone) + ")");
    }
  }

  /// Heads [head_begin, head_end) of tokens [begin, end) into k [n, heads, D] and v.
  void read_heads(const detail::PageTable& table, index_t begin, index_t end, index_t head_begin,
                  index_t head_end, float* k, float* v, index_t heads) const {
    const index_t dim = options_.head_dim, vdim = options_.value_dim;
    for (index_t h = head_begin; h < head_end; ++h) {
      const unsigned char* const* bases = table.heads[std::size_t(h)].bases.data();
      if (k != nullptr)
        detail::with_format(options_.format, dim, [&](auto format) {
          using Storage = typename decltype(format)::Storage;
          const detail::PagedRows<Storage> rows{bases, 0, layout_.key_row_bytes, layout_};
          for (index_t t = begin; t < end; ++t)
            format.to_acc(rows(t), k + ((t - begin) * heads + h - head_begin) * dim);
        });
      if (v != nullptr)
        detail::with_format(options_.format, vdim, [&](auto format) {
          using Storage = typename decltype(format)::Storage;
          const detail::PagedRows<Storage> rows{bases, layout_.values_offset(),
                                                layout_.value_row_bytes, layout_};
          for (index_t t = begin; t < end; ++t)
            format.to_acc(rows(t), v + ((t - begin) * heads + h - head_begin) * vdim);
        });
    }
  }

 public:
  const Options& options() const { return options_; }
  index_t kv_heads() const { return options_.kv_heads; }
  index_t head_dim() const { return options_.head_dim; }
  index_t value_dim() const { return options_.value_dim; }
  index_t page_size() const { return options_.page_size; }
  KVFormat format() const { return options_.format; }
  /// Bytes of one page (one kv head's keys and values of page_size tokens).
  std::size_t page_bytes() const { return std::size_t(layout_.page_bytes()); }
  /// Whether `id` is a sequence of this cache (added or forked, not released).
  bool contains(SequenceId id) const { return sequences_.count(id) != 0; }
  /// Sequences held.
  std::size_t sequences() const { return sequences_.size(); }

 private:
  friend struct detail::PagedAccess;

  [[noreturn]] static void unknown(const char* fn, const char* name, SequenceId id) {
    detail::fail(fn, std::string(name) + " = " + std::to_string(id) +
                         " is not a sequence of this cache (never added, or released)");
  }
  const detail::PageTable& find(const char* fn, const char* name, SequenceId id) const {
    const auto it = sequences_.find(id);
    if (it == sequences_.end()) unknown(fn, name, id);
    return it->second;
  }

  template <class U>
  void append_rows(SequenceId id, TensorView<const U> k, TensorView<const U> v) {
    const char* fn = "alibi::PagedKVCache::append";
    const auto it = sequences_.find(id);
    if (it == sequences_.end()) unknown(fn, "id", id);
    detail::check_view(fn, "k", k);
    detail::check_view(fn, "v", v);
    const index_t heads = options_.kv_heads, dim = options_.head_dim, vdim = options_.value_dim;
    if (k.batch() != 1 || k.heads() != heads || k.head_dim() != dim || v.batch() != 1 ||
        v.seq() != k.seq() || v.heads() != heads || v.head_dim() != vdim)
      detail::fail(fn, "k " + detail::shape_string(k.shape) + " and v " +
                           detail::shape_string(v.shape) + " must be [1, n, " +
                           std::to_string(heads) + ", " + std::to_string(dim) + "] and [1, n, " +
                           std::to_string(heads) + ", " + std::to_string(vdim) + "]");
    const index_t n = k.seq();
    if (n == 0) return;
    detail::PageTable& table = it->second;
    if (options_.max_bytes == 0) return append_piece(table, k, v);
    // Under a budget: up to one page of each head at a time, evicting before each piece, so that
    // an append longer than the budget keeps its newest tokens.
    check_sequences_fit(fn, options_.max_bytes, &table);
    const index_t ps = options_.page_size;
    for (index_t at = 0; at < n;) {
      const index_t piece = std::min(n - at, ps - table.length % ps);
      const auto part = [&](TensorView<const U> x) {
        x.data += at * x.strides[1];
        x.shape[1] = piece;
        return x;
      };
      make_room(fn, options_.max_bytes, &table, piece, pages_needed(table, piece));
      append_piece(table, part(k), part(v));
      at += piece;
    }
  }

  /// Pages an append of n tokens to `table` takes: new ones, and copies of shared last pages.
  std::size_t pages_needed(const detail::PageTable& table, index_t n) const {
    const index_t ps = options_.page_size, pages_after = (table.length + n + ps - 1) / ps;
    std::size_t needed = 0;
    for (const auto& head : table.heads) {
      needed += std::size_t(pages_after - index_t(head.pages.size()));
      if (table.length % ps != 0 && pool_.references(head.pages.back()) > 1) ++needed;
    }
    return needed;
  }

  /// A budget holds at least one page per kv head besides the sink pages.
  void check_budget(const char* fn, const char* name, std::size_t bytes) const {
    if (bytes == 0) return;
    const std::size_t least = std::size_t(options_.kv_heads) *
                              std::size_t(1 + sink_end() / options_.page_size) * page_bytes();
    if (bytes < least)
      detail::fail(fn, std::string(name) + " = " + std::to_string(bytes) +
                           " bytes is below one page per kv head plus the sink pages: " +
                           std::to_string(options_.kv_heads) + " kv heads x " +
                           std::to_string(1 + sink_end() / options_.page_size) + " pages x " +
                           std::to_string(page_bytes()) + " bytes = " + std::to_string(least));
  }

  /// Every sequence holding tokens (and `appending`) fits in `bytes` with its sink pages and one
  /// page per kv head: then every piece of an append finds room by eviction.
  void check_sequences_fit(const char* fn, std::size_t bytes,
                           const detail::PageTable* appending) const {
    std::size_t holding = 0;
    for (const auto& entry : sequences_)
      if (entry.second.length > 0 || &entry.second == appending) ++holding;
    const std::size_t per_sequence =
        std::size_t(options_.kv_heads) * std::size_t(1 + sink_end() / options_.page_size);
    if (holding * per_sequence > bytes / page_bytes())
      detail::fail(fn, "the budget of " + std::to_string(bytes) + " bytes (" +
                           std::to_string(bytes / page_bytes()) + " pages) cannot hold " +
                           std::to_string(holding) + " sequences x " +
                           std::to_string(per_sequence) +
                           " pages (the sink pages and one page per kv head each); raise it or "
                           "release sequences");
  }

  /// Evicts until the sequences hold at most bytes - `needed` pages, `appending` counted at n
  /// more tokens (budget_plan.hpp).
  void make_room(const char* fn, std::size_t bytes, detail::PageTable* appending, index_t n,
                 std::size_t needed) {
    const std::size_t budget = bytes / page_bytes();
    if (pool_.held() + needed <= budget) return;
    std::vector<detail::PageTable*> tables;
    std::vector<index_t> lengths;
    for (auto& entry : sequences_) {
      tables.push_back(&entry.second);
      lengths.push_back(entry.second.length + (&entry.second == appending ? n : 0));
    }
    const detail::BudgetPlanner planner(tables, lengths,
                                        detail::planning_slopes(options_.slopes, options_.kv_heads),
                                        options_.page_size, sink_end());
    double level = 0;
    if (needed > budget || !planner.level_for(budget - needed, level))
      detail::fail(fn, "the budget of " + std::to_string(bytes) +
                           " bytes cannot hold the sequences' sink pages and last pages");
    for (std::size_t s = 0; s < tables.size(); ++s)
      for (index_t kv = 0; kv < options_.kv_heads; ++kv)
        detail::evict_front(tables[s]->heads[std::size_t(kv)], planner.front(s, kv, level),
                            sink_end(), options_.page_size, pool_);
  }

  const detail::PageTable::Head& head_of(const char* fn, SequenceId id, index_t kv) const {
    const detail::PageTable& table = find(fn, "id", id);
    if (kv < 0 || kv >= options_.kv_heads)
      detail::fail(fn, "kv_head " + std::to_string(kv) + " is not in [0, " +
                           std::to_string(options_.kv_heads) + ")");
    return table.heads[std::size_t(kv)];
  }

  /// Appends k [1, n, Hkv, D] and v to `table` (checked by the caller).
  template <class U>
  void append_piece(detail::PageTable& table, TensorView<const U> k, TensorView<const U> v) {
    const index_t heads = options_.kv_heads, dim = options_.head_dim, vdim = options_.value_dim;
    const index_t n = k.seq();
    const index_t ps = options_.page_size, block = detail::KeyNormBounds::block;
    const index_t length = table.length, total = length + n;
    const index_t pages_after = (total + ps - 1) / ps, blocks_after = (total + block - 1) / block;
    // Everything that can fail is done first: the pages this append takes (new ones, and copies
    // of a shared partial last page), room in the tables, the row buffers.
    std::size_t needed = 0;
    for (const auto& head : table.heads) {
      needed += std::size_t(pages_after - index_t(head.pages.size()));
      if (length % ps != 0 && pool_.references(head.pages.back()) > 1) ++needed;
    }
    pool_.reserve_free(needed);
    for (auto& head : table.heads) {
      head.pages.reserve(std::size_t(pages_after));
      head.bases.reserve(std::size_t(pages_after));
      head.block_max.reserve(std::size_t(blocks_after));
      head.prefix_max.reserve(std::size_t(blocks_after));
    }
    std::vector<float> row(static_cast<std::size_t>(std::max(dim, vdim)));
    std::vector<float> stored(static_cast<std::size_t>(dim));
    // From here on nothing throws.
    for (index_t h = 0; h < heads; ++h) {
      auto& head = table.heads[std::size_t(h)];
      if (length % ps != 0 && pool_.references(head.pages.back()) > 1) {
        const auto copy = pool_.acquire();
        std::memcpy(pool_.base(copy), head.bases.back(), std::size_t(layout_.page_bytes()));
        pool_.release(head.pages.back());
        head.pages.back() = copy;
        head.bases.back() = pool_.base(copy);
      }
      while (index_t(head.pages.size()) < pages_after) {
        const auto page = pool_.acquire();
        head.pages.push_back(page);
        head.bases.push_back(pool_.base(page));
      }
      head.block_max.resize(std::size_t(blocks_after), 0.0f);
      head.prefix_max.resize(std::size_t(blocks_after), 0.0f);
      detail::with_format(options_.format, dim, [&](auto format) {
        using Storage = typename decltype(format)::Storage;
        for (index_t t = 0; t < n; ++t) {
          const index_t slot = length + t, page = layout_.page_of(slot);
          unsigned char* base = pool_.base(head.pages[std::size_t(page)]);
          auto* key = reinterpret_cast<Storage*>(base + (slot - page * ps) * layout_.key_row_bytes);
          for (index_t d = 0; d < dim; ++d) row[std::size_t(d)] = float(k(0, t, h, d));
          format.store(row.data(), key);
          // The norm of the key as stored, so that the tail bound holds for what is read.
          format.to_acc(key, stored.data());
          double squares = 0;
          for (const float x : stored) squares += double(x) * double(x);
          float& maximum = head.block_max[std::size_t(slot / block)];
          maximum = detail::nan_max(maximum, float(std::sqrt(squares)));
        }
      });
      detail::with_format(options_.format, vdim, [&](auto format) {
        using Storage = typename decltype(format)::Storage;
        for (index_t t = 0; t < n; ++t) {
          const index_t slot = length + t, page = layout_.page_of(slot);
          unsigned char* base = pool_.base(head.pages[std::size_t(page)]);
          auto* value = reinterpret_cast<Storage*>(base + layout_.values_offset() +
                                                   (slot - page * ps) * layout_.value_row_bytes);
          for (index_t d = 0; d < vdim; ++d) row[std::size_t(d)] = float(v(0, t, h, d));
          format.store(row.data(), value);
        }
      });
      for (index_t i = length / block; i < blocks_after; ++i)
        head.prefix_max[std::size_t(i)] = detail::nan_max(
            i == 0 ? 0.0f : head.prefix_max[std::size_t(i - 1)], head.block_max[std::size_t(i)]);
    }
    table.length = total;
  }

  Options options_;
  detail::PageLayout layout_;
  detail::PagePool pool_;
  std::unordered_map<SequenceId, detail::PageTable> sequences_;
  SequenceId next_id_ = 0;
};

namespace detail {
/// What attention reads of a cache.
struct PagedAccess {
  static const PageTable* table(const PagedKVCache& cache, SequenceId id) {
    const auto it = cache.sequences_.find(id);
    return it == cache.sequences_.end() ? nullptr : &it->second;
  }
  static const PageLayout& layout(const PagedKVCache& cache) { return cache.layout_; }
};
}  // namespace detail

/// Attention of q [B, Sq, Hq, D] over sequences `seqs` of `cache` (B of them, any subset, any
/// order: continuous batching). Row b's queries are sequence seqs[b]'s newest Sq tokens, already
/// appended (bottom-right aligned to its own length); out is [B, Sq, Hq, Dv]. T is float,
/// Eigen::half or Eigen::bfloat16 (arithmetic in float). Every Params option works except
/// key_offset and seqlens_k, which come from the cache and must be left unset. The tail skip
/// uses the stored keys' norm bounds; long sequences split over threads and merge in float,
/// bitwise the same for any thread count. lse, when not null, receives [B, Hq, Sq].
///
/// Over sequences that evicted keys under the budget (PagedKVCache::set_budget), each head
/// attends its sink pages and what it kept, at their absolute positions, and every query row gets
/// a certificate: a bound on the total weight the evicted keys could have carried relative to
/// the row's sum (Cauchy-Schwarz with their largest norm and nearest distance, and the row's
/// lse). The largest goes to params.stats->evicted_weight_bound; the output then differs from
/// attention over the full, never-evicted history by at most about 2 x that x max |v|. When it
/// exceeds params.max_evicted_weight (> 0), alibi::BudgetExceeded names the sequence, query head
/// and bound, and nothing is written.
///
/// Throws std::invalid_argument, before anything is written, for an unknown or released id, a
/// shape that does not fit the cache, or params that do not fit.
template <class T>
void attention(TensorView<const detail::nondeduced<T>> q, const PagedKVCache& cache,
               const std::vector<SequenceId>& seqs, TensorView<T> out, const Params& params = {},
               float* lse = nullptr) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, Eigen::half>::value ||
                    std::is_same<T, Eigen::bfloat16>::value,
                "alibi::attention(PagedKVCache): T must be float, Eigen::half or Eigen::bfloat16");
  const char* fn = "alibi::attention(PagedKVCache)";
  detail::check_view(fn, "q", q);
  detail::check_view(fn, "out", out);
  const index_t batch = q.batch(), heads_kv = cache.kv_heads();
  if (index_t(seqs.size()) != batch)
    detail::fail(fn, "seqs has " + std::to_string(seqs.size()) + " ids but q " +
                         detail::shape_string(q.shape) + " has batch " + std::to_string(batch));
  std::vector<const detail::PageTable*> tables(seqs.size());
  Params resolved = params;
  if (params.key_offset || !params.seqlens_k.empty())
    detail::fail(fn,
                 "params.key_offset and params.seqlens_k come from the cache; leave them unset");
  index_t longest = 0;
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    tables[b] = detail::PagedAccess::table(cache, seqs[b]);
    if (tables[b] == nullptr)
      detail::fail(fn, "seqs[" + std::to_string(b) + "] = " + std::to_string(seqs[b]) +
                           " is not a sequence of the cache (never added, or released)");
    resolved.seqlens_k.push_back(tables[b]->length);
    longest = std::max(longest, tables[b]->length);
  }
  if (q.head_dim() != cache.head_dim())
    detail::fail(fn, "q " + detail::shape_string(q.shape) + " has head_dim " +
                         std::to_string(q.head_dim()) + " but the cache has " +
                         std::to_string(cache.head_dim()));
  if (q.heads() % heads_kv != 0)
    detail::fail(fn, "the cache has " + std::to_string(heads_kv) + " kv heads but q's " +
                         std::to_string(q.heads()) + " heads are not a multiple of it");
  if (out.batch() != batch || out.seq() != q.seq() || out.heads() != q.heads() ||
      out.head_dim() != cache.value_dim())
    detail::fail(fn, "out has shape " + detail::shape_string(out.shape) + " but q " +
                         detail::shape_string(q.shape) + " and the cache's value_dim " +
                         std::to_string(cache.value_dim()) + " need [" + std::to_string(batch) +
                         ", " + std::to_string(q.seq()) + ", " + std::to_string(q.heads()) + ", " +
                         std::to_string(cache.value_dim()) + "]");
  detail::check_params(fn, resolved, batch, q.heads(), longest);
  detail::check_distinct_elements(fn, "out", out);
  const detail::ByteSpan out_span = detail::byte_span(fn, "out", out),
                         q_span = detail::byte_span(fn, "q", q);
  if (out_span.overlaps(q_span)) detail::fail(fn, "out overlaps q in memory");
  if (lse != nullptr) {
    const auto base = reinterpret_cast<std::uintptr_t>(lse);
    const detail::ByteSpan lse_span{
        base, base + std::uintptr_t(batch * q.heads() * q.seq()) * sizeof(float)};
    if (lse_span.overlaps(out_span) || lse_span.overlaps(q_span))
      detail::fail(fn, "lse [" + std::to_string(batch) + ", " + std::to_string(q.heads()) + ", " +
                           std::to_string(q.seq()) + "] overlaps q or out in memory");
  }
  const detail::Geometry g(batch, q.seq(), longest, q.heads(), heads_kv, cache.head_dim(),
                           cache.value_dim(), resolved);
  detail::with_format(cache.format(), cache.head_dim(), [&](auto format) {
    using Source = detail::PagedSource<decltype(format)>;
    const Source source(tables, detail::PagedAccess::layout(cache), cache.head_dim(),
                        cache.value_dim(), !g.causal);
    if (detail::any_evicted(tables))
      detail::budgeted_forward(fn, g, q, source, tables, seqs, cache.page_size(), cache.sink_end(),
                               out, lse, params);
    else
      detail::forward(g, q, source, out, lse, params.num_threads, params.stats);
  });
}

}  // namespace alibi
