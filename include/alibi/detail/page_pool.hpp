#pragma once
// The storage of alibi::PagedKVCache: a pool of fixed-size pages and, per sequence, a block table.
// A page holds one kv head's keys and then its values for page_size consecutive tokens, each row
// in the cache's storage format (kv_format.hpp): a decode step streams a page front to back, and
// pages can be freed per (sequence, kv head). Pages are reference counted: a fork shares them,
// and a page is written only while one sequence holds it (copy-on-write).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../tensor_view.hpp"
#include "cache_storage.hpp"
#include "tail_bound.hpp"

namespace alibi {
namespace detail {

/// Where rows sit inside a page.
struct PageLayout {
  index_t page_size = 0;        // tokens per page
  index_t key_row_bytes = 0;    // one key row in the storage format
  index_t value_row_bytes = 0;  // one value row
  int shift = -1;               // log2(page_size) when a power of two, else -1

  PageLayout() = default;
  PageLayout(index_t tokens, index_t key_bytes, index_t value_bytes)
      : page_size(tokens), key_row_bytes(key_bytes), value_row_bytes(value_bytes) {
    if ((tokens & (tokens - 1)) == 0)
      for (shift = 0; (index_t(1) << shift) < tokens;) ++shift;
  }
  index_t values_offset() const { return page_size * key_row_bytes; }
  /// Bytes of a page, whole cache lines.
  index_t page_bytes() const {
    return (page_size * (key_row_bytes + value_row_bytes) + 63) / 64 * 64;
  }
  index_t page_of(index_t t) const { return shift >= 0 ? t >> shift : t / page_size; }
};

/// Fixed-size pages carved from 2 MB slabs (huge pages where the system gives them: a stream over
/// many pages then takes no TLB miss per 4 KB). Slabs are kept for the cache's lifetime; pages
/// come and go through a free list.
class PagePool {
 public:
  using PageId = std::int64_t;

  PagePool() = default;
  explicit PagePool(index_t page_bytes) : page_bytes_(page_bytes) {}

  /// A page nobody holds yet, with one reference. Throws std::bad_alloc (nothing changed).
  PageId acquire() {
    if (free_.empty()) grow();
    const PageId id = free_.back();
    free_.pop_back();
    references_[std::size_t(id)] = 1;
    ++held_;
    return id;
  }
  void retain(PageId id) { ++references_[std::size_t(id)]; }
  void release(PageId id) {
    if (--references_[std::size_t(id)] == 0) {
      free_.push_back(id);  // reserved in grow(): never throws
      --held_;
    }
  }
  /// Pages available without allocating.
  std::size_t free_pages() const { return free_.size(); }
  /// Makes at least `n` pages available (so that a later run of acquire() cannot throw).
  void reserve_free(std::size_t n) {
    while (free_.size() < n) grow();
  }

  int references(PageId id) const { return references_[std::size_t(id)]; }
  unsigned char* base(PageId id) const { return bases_[std::size_t(id)]; }
  index_t page_bytes() const { return page_bytes_; }
  /// Pages held by at least one sequence.
  std::size_t held() const { return held_; }

 private:
  void grow() {
    constexpr index_t slab_bytes = index_t(1) << 21;
    const index_t bytes = std::max(slab_bytes, page_bytes_);
    const index_t pages = bytes / page_bytes_;
    // Room first, so that a failure leaves the pool as it was and release() never allocates.
    bases_.reserve(bases_.size() + std::size_t(pages));
    references_.reserve(bases_.size() + std::size_t(pages));
    free_.reserve(bases_.size() + std::size_t(pages));
    slabs_.reserve(slabs_.size() + 1);
    slabs_.emplace_back(std::size_t(bytes));
    unsigned char* data = slabs_.back().data();
    for (index_t i = 0; i < pages; ++i) {
      bases_.push_back(data + i * page_bytes_);
      references_.push_back(0);
    }
    // Lowest first: a new cache fills a slab front to back.
    for (index_t i = pages; i-- > 0;) free_.push_back(PageId(bases_.size()) - pages + i);
  }

  index_t page_bytes_ = 0;
  std::vector<cache_vector<unsigned char>> slabs_;  // moving a slab keeps its buffer
  std::vector<unsigned char*> bases_;
  std::vector<int> references_;
  std::vector<PageId> free_;
  std::size_t held_ = 0;
};

/// One sequence of a paged cache: its length and, per kv head, its pages in token order (ids for
/// the pool, base pointers for the walks) and the key-norm maxima of the stored keys per block of
/// KeyNormBounds::block tokens, with their running (prefix) maxima for the tail bound.
struct PageTable {
  struct Head {
    std::vector<PagePool::PageId> pages;  // evicted pages: -1 (and a null base)
    std::vector<const unsigned char*> bases;
    std::vector<float> block_max, prefix_max;
    // A memory budget's eviction (budget_plan.hpp): tokens [sink end, evicted_end) are gone, the
    // largest of their stored norms was evicted_norm. Positions stay absolute.
    index_t evicted_end = 0;
    float evicted_norm = 0;
  };
  index_t length = 0;
  std::vector<Head> heads;

  /// The largest stored key norm among keys [0, end) of kv head `kv` (an upper bound: whole
  /// blocks).
  float norm_before(index_t kv, index_t end) const {
    const std::vector<float>& prefix = heads[std::size_t(kv)].prefix_max;
    if (end <= 0 || prefix.empty()) return 0.0f;
    const index_t last =
        std::min<index_t>((end - 1) / KeyNormBounds::block, index_t(prefix.size()) - 1);
    return prefix[std::size_t(last)];
  }
};

}  // namespace detail
}  // namespace alibi
