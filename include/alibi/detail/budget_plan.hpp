#pragma once
// What a memory-budgeted PagedKVCache evicts. Pages are freed whole from the front of each
// (sequence, kv head), past the pages holding its sink tokens. A key at distance d from every
// future query of a head with slope m carries at most exp(|q| |k| - m d) / (1 - e^-m) of the
// weight summed over all such keys (eviction_bound.hpp), so the keep distances L_h that make the
// largest possible evicted weight smallest equalise m_h L_h + log(1 - e^-m_h) across heads: one
// "water level" for every head of every sequence, the highest whose pages fit the budget. With
// GQA a kv head plans for the shallowest of its query heads; a zero slope is planned as the
// shallowest positive one (no distance bounds such a head; its certificate says so).

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../tensor_view.hpp"
#include "page_pool.hpp"
#include "tail_bound.hpp"

namespace alibi {
namespace detail {

/// Per kv head, the slope its keep distance is planned for (see the top of this file); all equal
/// (one window for every head) when no slope is given or none is positive.
inline std::vector<double> planning_slopes(const std::vector<float>& slopes, index_t kv_heads) {
  std::vector<double> planned(std::size_t(kv_heads), 1.0);
  if (slopes.empty()) return planned;
  double shallowest = std::numeric_limits<double>::infinity();
  for (const float m : slopes)
    if (m > 0) shallowest = std::min(shallowest, double(m));
  if (std::isinf(shallowest)) return planned;
  const std::size_t group = slopes.size() / std::size_t(kv_heads);
  for (std::size_t h = 0; h < planned.size(); ++h) {
    double m = std::numeric_limits<double>::infinity();
    for (std::size_t j = 0; j < group; ++j) m = std::min(m, double(slopes[h * group + j]));
    planned[h] = m > 0 ? m : shallowest;
  }
  return planned;
}

/// The keys a head of slope m keeps at water level `level`: the least distance L with
/// exp(-m L) / (1 - e^-m) <= e^-level (negative: none needed).
inline double keep_distance(double m, double level) {
  return (level - std::log(-std::expm1(-m))) / m;
}

/// The budget's view of a cache: which (sequence, kv head) keeps what.
class BudgetPlanner {
 public:
  /// `tables`: every sequence; `lengths`: each one's length once the pending append is done;
  /// `sink_end`: tokens before it are never evicted (whole pages holding the sink tokens).
  BudgetPlanner(std::vector<PageTable*> tables, std::vector<index_t> lengths,
                std::vector<double> slopes, index_t page_size, index_t sink_end)
      : tables_(std::move(tables)),
        lengths_(std::move(lengths)),
        slopes_(std::move(slopes)),
        page_size_(page_size),
        sink_end_(sink_end) {
    for (const PageTable* t : tables_)
      for (const auto& head : t->heads)
        for (const auto page : head.pages) max_page_ = std::max(max_page_, page);
  }

  /// Where head `kv` of sequence `s` would keep its keys from at water level `level`: page
  /// aligned, never before what it already evicted, always its last page (the one appended to).
  index_t front(std::size_t s, index_t kv, double level) const {
    const index_t current = tables_[s]->heads[std::size_t(kv)].evicted_end;
    const index_t length = lengths_[s];
    if (length <= sink_end_) return current;
    const index_t last_page = (length - 1) / page_size_ * page_size_;
    const double distance =
        std::ceil(std::max(0.0, keep_distance(slopes_[std::size_t(kv)], level)));
    index_t front =
        distance >= double(length) ? 0 : (length - index_t(distance)) / page_size_ * page_size_;
    front = std::min(front, last_page);
    return front <= sink_end_ ? current : std::max(current, front);
  }

  /// Pages the sequences would hold at water level `level` (a page shared by forks once), not
  /// counting pages an append has yet to take.
  std::size_t pages_held(double level) const {
    if (tables_.size() == 1) {  // no page is shared within one sequence
      std::size_t held = 0;
      for (index_t kv = 0; kv < index_t(tables_[0]->heads.size()); ++kv)
        held += kept(0, kv, level, nullptr);
      return held;
    }
    marks_.assign(std::size_t(max_page_ + 1), 0);
    std::size_t held = 0;
    for (std::size_t s = 0; s < tables_.size(); ++s)
      for (index_t kv = 0; kv < index_t(tables_[s]->heads.size()); ++kv)
        held += kept(s, kv, level, &marks_);
    return held;
  }

  /// The highest water level at which the sequences hold at most `pages` pages; false when even
  /// keeping only the sink pages and the last page of every head holds more.
  bool level_for(std::size_t pages, double& level) const {
    double lo = -1e3, hi = -1e3;
    index_t longest = 0;
    for (const index_t n : lengths_) longest = std::max(longest, n);
    for (const double m : slopes_) hi = std::max(hi, m * double(longest) + 64.0);
    if (pages_held(hi) <= pages) {
      level = hi;
      return true;
    }
    if (pages_held(lo) > pages) return false;
    for (int i = 0; i < 64 && hi - lo > 1e-9 * std::max(1.0, std::fabs(hi)); ++i) {
      const double mid = 0.5 * (lo + hi);
      (pages_held(mid) <= pages ? lo : hi) = mid;
    }
    level = lo;
    return true;
  }

 private:
  /// Pages head `kv` of sequence `s` keeps at `level` that are not marked yet (marking them).
  std::size_t kept(std::size_t s, index_t kv, double level, std::vector<char>* marks) const {
    const auto& pages = tables_[s]->heads[std::size_t(kv)].pages;
    const index_t from = front(s, kv, level) / page_size_, sinks = sink_end_ / page_size_;
    const index_t count = index_t(pages.size());
    if (marks == nullptr)
      return std::size_t(std::min(sinks, count) +
                         std::max<index_t>(0, count - std::max(from, sinks)));
    std::size_t held = 0;
    const auto mark = [&](index_t i) {
      const auto page = pages[std::size_t(i)];
      if (page < 0 || (*marks)[std::size_t(page)]) return;
      (*marks)[std::size_t(page)] = 1;
      ++held;
    };
    for (index_t i = 0; i < std::min(sinks, count); ++i) mark(i);
    for (index_t i = std::max(from, sinks); i < count; ++i) mark(i);
    return held;
  }

  std::vector<PageTable*> tables_;
  std::vector<index_t> lengths_;
  std::vector<double> slopes_;
  index_t page_size_, sink_end_;
  PagePool::PageId max_page_ = 0;
  mutable std::vector<char> marks_;
};

/// Frees the pages of `head` before `front` (past the sink pages, from what it kept so far),
/// folds the norms of their keys into evicted_norm and takes them out of the tail skip's norm
/// maxima.
inline void evict_front(PageTable::Head& head, index_t front, index_t sink_end, index_t page_size,
                        PagePool& pool) {
  const index_t begin = std::max(head.evicted_end, sink_end);
  if (front <= begin) return;
  for (index_t i = begin / page_size; i < front / page_size; ++i) {
    PagePool::PageId& page = head.pages[std::size_t(i)];
    if (page >= 0) pool.release(page);
    page = -1;
    head.bases[std::size_t(i)] = nullptr;
  }
  const index_t block = KeyNormBounds::block;
  for (index_t i = begin / block; i < front / block; ++i) {
    head.evicted_norm = nan_max(head.evicted_norm, head.block_max[std::size_t(i)]);
    head.block_max[std::size_t(i)] = 0.0f;
  }
  head.evicted_end = front;
  // The running maxima from the first evicted block on: the sinks' below it, then the kept keys'.
  float running = sink_end > 0 ? head.prefix_max[std::size_t(sink_end / block - 1)] : 0.0f;
  for (std::size_t i = std::size_t(begin / block); i < head.prefix_max.size(); ++i)
    head.prefix_max[i] = running = nan_max(running, head.block_max[i]);
}

}  // namespace detail
}  // namespace alibi
