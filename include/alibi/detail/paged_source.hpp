#pragma once
// Keys and values of a paged cache's sequences as a source of the walks (kv_source.hpp): batch
// row b is sequence tables[b]; row t of kv head kv is found through its block table. Norm bounds
// are the tables' prefix maxima of the stored keys, and suffix maxima built per call when keys
// follow their queries (not causal): the cache itself is never written by a read.

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "kv_format.hpp"
#include "page_pool.hpp"
#include "tail_bound.hpp"

namespace alibi {
namespace detail {

/// Rows of one (sequence, kv head) through its pages: row t at
/// pages[t / page_size] + offset + (t % page_size) * row_bytes.
template <class S>
struct PagedRows {
  const unsigned char* const* pages = nullptr;
  index_t offset = 0, row_bytes = 0;
  PageLayout layout{};

  const S* operator()(index_t t) const {
    const index_t page = layout.page_of(t);
    return reinterpret_cast<const S*>(pages[page] + offset +
                                      (t - page * layout.page_size) * row_bytes);
  }
  /// Keys [t0, t0 + n) are one run when they lie in one page.
  bool run(index_t t0, index_t n, const S*& first, index_t& row_stride) const {
    if (n <= 0 || layout.page_of(t0) != layout.page_of(t0 + n - 1) ||
        row_bytes % index_t(sizeof(S)) != 0)
      return false;
    first = (*this)(t0);
    row_stride = row_bytes / index_t(sizeof(S));
    return true;
  }
};

template <class F>
class PagedSource {
 public:
  using Format = F;
  using Storage = typename F::Storage;
  using Acc = typename F::Acc;
  using Rows = PagedRows<Storage>;

  /// `suffix`: also build the maxima of key norms from any key on (calls with keys after their
  /// queries need them).
  PagedSource(std::vector<const PageTable*> tables, PageLayout layout, index_t head_dim,
              index_t value_dim, bool suffix)
      : tables_(std::move(tables)), layout_(layout), head_dim_(head_dim), value_dim_(value_dim) {
    if (!suffix) return;
    const index_t heads = tables_.empty() ? 0 : index_t(tables_.front()->heads.size());
    suffix_.resize(tables_.size() * std::size_t(heads));
    for (std::size_t b = 0; b < tables_.size(); ++b)
      for (index_t kv = 0; kv < heads; ++kv) {
        const std::vector<float>& blocks = tables_[b]->heads[std::size_t(kv)].block_max;
        std::vector<float>& from = suffix_[b * std::size_t(heads) + std::size_t(kv)];
        from.resize(blocks.size());
        float running = 0;
        for (std::size_t i = blocks.size(); i-- > 0;)
          from[i] = running = nan_max(running, blocks[i]);
      }
    heads_ = heads;
  }

  Rows keys(index_t b, index_t kv) const {
    return {bases(b, kv), 0, layout_.key_row_bytes, layout_};
  }
  Rows values(index_t b, index_t kv) const {
    return {bases(b, kv), layout_.values_offset(), layout_.value_row_bytes, layout_};
  }
  Format key_format() const { return {head_dim_}; }
  Format value_format() const { return {value_dim_}; }
  index_t first_key(index_t, index_t) const { return 0; }
  bool contiguous() const { return true; }

  void key_to_acc(index_t b, index_t kv, index_t t, Acc* dst) const {
    key_format().to_acc(keys(b, kv)(t), dst);
  }
  void value_to_acc(index_t b, index_t kv, index_t t, Acc* dst) const {
    value_format().to_acc(values(b, kv)(t), dst);
  }

  bool has_norms() const { return true; }
  float norm_before(index_t b, index_t kv, index_t end) const {
    return tables_[std::size_t(b)]->norm_before(kv, end);
  }
  float norm_from(index_t b, index_t kv, index_t begin) const {
    // Without suffix maxima, no bound: the walk then visits every key after its queries.
    if (suffix_.empty()) return std::numeric_limits<float>::infinity();
    const std::vector<float>& from = suffix_[std::size_t(b * heads_ + kv)];
    const index_t block = begin < 0 ? 0 : begin / KeyNormBounds::block;
    return block >= index_t(from.size()) ? 0.0f : from[std::size_t(block)];
  }

 private:
  const unsigned char* const* bases(index_t b, index_t kv) const {
    return tables_[std::size_t(b)]->heads[std::size_t(kv)].bases.data();
  }

  std::vector<const PageTable*> tables_;
  PageLayout layout_;
  index_t head_dim_, value_dim_, heads_ = 0;
  std::vector<std::vector<float>> suffix_;
};

}  // namespace detail
}  // namespace alibi
