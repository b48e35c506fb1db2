#pragma once
// A growing KV cache for streaming decode, and attention against it. The cache keeps per-block
// key norm maxima as tokens arrive, so a decode step with the tail skip costs O(keys visited),
// not O(context); long decodes split the key range over threads and merge (flash-decoding).

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "detail/cache_storage.hpp"
#include "detail/numeric.hpp"
#include "detail/overlap.hpp"
#include "detail/split_kv.hpp"
#include "detail/tail_bound.hpp"
#include "detail/validate.hpp"
#include "merge.hpp"
#include "params.hpp"
#include "tensor_view.hpp"

namespace alibi {

/// Keys and values of one attention layer for T float, double, Eigen::half or Eigen::bfloat16,
/// stored head-major ([B, Hkv, capacity, D]: each head's keys contiguous, so a decode step streams
/// them) and seen through BSHD views. Each batch row has its own length. Capacity grows
/// geometrically (an append copies the cache only when it doubles). With keep_last > 0 (a
/// sliding-window model) the cache drops keys from the front once every row holds more than
/// keep_last of them, so memory stays bounded; positions stay absolute (first_position()).
///
///     alibi::KVCache<float> cache(1, 8, 128);
///     cache.append(k_prompt, v_prompt);                  // [1, n, 8, 128]
///     alibi::attention(q_prompt, cache, out_prompt);     // causal prefill
///     cache.append(k_token, v_token);                    // [1, 1, 8, 128]
///     alibi::attention(q_token, cache, out_token);       // one decode step
template <class T>
class KVCache {
 public:
  KVCache(index_t batch, index_t kv_heads, index_t head_dim, index_t value_dim = 0,
          index_t keep_last = 0)
      : batch_(batch),
        heads_(kv_heads),
        head_dim_(head_dim),
        value_dim_(value_dim > 0 ? value_dim : head_dim),
        keep_last_(keep_last),
        lengths_(std::size_t(std::max<index_t>(batch, 0)), 0) {
    const char* fn = "alibi::KVCache";
    if (batch < 1 || kv_heads < 1 || head_dim < 1 || value_dim < 0 || keep_last < 0)
      detail::fail(fn, "needs batch, kv_heads, head_dim >= 1 and value_dim, keep_last >= 0, got " +
                           std::to_string(batch) + ", " + std::to_string(kv_heads) + ", " +
                           std::to_string(head_dim) + ", " + std::to_string(value_dim) + ", " +
                           std::to_string(keep_last));
    norms_ = detail::KeyNormBounds(batch, kv_heads, 0);
  }

  /// Appends k [B, n, Hkv, D] and v [B, n, Hkv, Dv]: batch row b takes its first counts[b]
  /// tokens (all n when counts is empty). Throws std::invalid_argument on shapes that do not fit.
  void append(TensorView<const detail::nondeduced<T>> k, TensorView<const detail::nondeduced<T>> v,
              const std::vector<index_t>& counts = {}) {
    const char* fn = "alibi::KVCache::append";
    detail::check_view(fn, "k", k);
    detail::check_view(fn, "v", v);
    if (k.batch() != batch_ || k.heads() != heads_ || k.head_dim() != head_dim_ ||
        v.batch() != batch_ || v.seq() != k.seq() || v.heads() != heads_ ||
        v.head_dim() != value_dim_)
      detail::fail(fn, "k " + detail::shape_string(k.shape) + " and v " +
                           detail::shape_string(v.shape) + " do not fit a cache of batch " +
                           std::to_string(batch_) + ", " + std::to_string(heads_) +
                           " kv heads, head_dim " + std::to_string(head_dim_) + ", value_dim " +
                           std::to_string(value_dim_));
    if (!counts.empty() && index_t(counts.size()) != batch_)
      detail::fail(fn, "counts has " + std::to_string(counts.size()) + " values for batch " +
                           std::to_string(batch_));
    // A view of this cache (keys(), values()) would dangle once the storage grows or moves.
    const auto storage = [](const detail::cache_vector<T>& x) {
      return detail::lattice_of_array(x.data(), index_t(x.size()), index_t(sizeof(T)));
    };
    for (const auto& input : {detail::lattice_of(k), detail::lattice_of(v)})
      if (detail::share_bytes(input, storage(keys_)) ||
          detail::share_bytes(input, storage(values_)))
        detail::fail(fn, "k or v is a view of this cache's own storage; copy it first");
    for (std::size_t b = 0; b < counts.size(); ++b)
      if (counts[b] < 0 || counts[b] > k.seq())
        detail::fail(fn, "counts[" + std::to_string(b) + "] = " + std::to_string(counts[b]) +
                             " is outside [0, " + std::to_string(k.seq()) + "]");
    const auto needed = [&] {
      index_t longest = 0;
      for (index_t b = 0; b < batch_; ++b)
        longest = std::max(longest, lengths_[std::size_t(b)] +
                                        (counts.empty() ? k.seq() : counts[std::size_t(b)]));
      return longest;
    };
    if (keep_last_ > 0 && needed() > capacity_) drop_front();
    reserve(needed());
    for (index_t b = 0; b < batch_; ++b) {
      const index_t n = counts.empty() ? k.seq() : counts[std::size_t(b)];
      const index_t at = lengths_[std::size_t(b)];
      for (index_t h = 0; h < heads_; ++h)
        for (index_t t = 0; t < n; ++t) {
          T* key = key_row(b, h, at + t);
          T* value = value_row(b, h, at + t);
          for (index_t d = 0; d < head_dim_; ++d) key[d] = k(b, t, h, d);
          for (index_t d = 0; d < value_dim_; ++d) value[d] = v(b, t, h, d);
        }
      for (index_t h = 0; h < heads_; ++h) norms_.add_keys(keys(), b, h, at, at + n);
      lengths_[std::size_t(b)] = at + n;
    }
    // Here, not in a const reader: attention on a const cache may run on several threads.
    norms_.prepare_suffix();
  }

  index_t batch() const { return batch_; }
  index_t kv_heads() const { return heads_; }
  index_t head_dim() const { return head_dim_; }
  index_t value_dim() const { return value_dim_; }
  /// Keys held for batch row b, and the longest row.
  index_t length(index_t b) const { return lengths_[std::size_t(b)]; }
  index_t longest() const { return *std::max_element(lengths_.begin(), lengths_.end()); }
  const std::vector<index_t>& lengths() const { return lengths_; }
  /// Absolute position of slot 0 (keys dropped from the front so far).
  index_t first_position() const { return first_position_; }
  index_t capacity() const { return capacity_; }
  /// Bytes of key and value storage.
  std::size_t bytes() const { return (keys_.capacity() + values_.capacity()) * sizeof(T); }

  /// The stored keys and values, [B, longest(), Hkv, D]: slots past a row's length hold nothing.
  TensorView<const T> keys() const {
    return {keys_.data(),
            {batch_, longest(), heads_, head_dim_},
            {heads_ * capacity_ * head_dim_, head_dim_, capacity_ * head_dim_, 1}};
  }
  TensorView<const T> values() const {
    return {values_.data(),
            {batch_, longest(), heads_, value_dim_},
            {heads_ * capacity_ * value_dim_, value_dim_, capacity_ * value_dim_, 1}};
  }
  /// Per-block key norm maxima, kept as keys arrive (for the tail skip).
  const detail::KeyNormBounds& norms() const { return norms_; }

 private:
  T* key_row(index_t b, index_t h, index_t t) {
    return keys_.data() + ((b * heads_ + h) * capacity_ + t) * head_dim_;
  }
  T* value_row(index_t b, index_t h, index_t t) {
    return values_.data() + ((b * heads_ + h) * capacity_ + t) * value_dim_;
  }

  void reserve(index_t keys) {
    if (keys <= capacity_) return;
    const index_t capacity = std::max<index_t>({keys, 2 * capacity_, 256});
    detail::cache_vector<T> k(std::size_t(batch_ * heads_ * capacity * head_dim_));
    detail::cache_vector<T> v(std::size_t(batch_ * heads_ * capacity * value_dim_));
    for (index_t b = 0; b < batch_; ++b)
      for (index_t h = 0; h < heads_; ++h) {
        const index_t n = lengths_[std::size_t(b)];
        std::copy_n(key_row(b, h, 0), n * head_dim_,
                    k.data() + (b * heads_ + h) * capacity * head_dim_);
        std::copy_n(value_row(b, h, 0), n * value_dim_,
                    v.data() + (b * heads_ + h) * capacity * value_dim_);
      }
    keys_.swap(k);
    values_.swap(v);
    capacity_ = capacity;
    norms_.reserve(batch_, capacity);
  }

  /// Drops whole norm blocks from the front of every row, as many as keep every row at or above
  /// keep_last keys: O(cache) once per about keep_last appended tokens.
  void drop_front() {
    const index_t shortest = *std::min_element(lengths_.begin(), lengths_.end());
    const index_t block = detail::KeyNormBounds::block;
    const index_t drop = std::max<index_t>(0, shortest - keep_last_) / block * block;
    if (drop == 0) return;
    for (index_t b = 0; b < batch_; ++b) {
      const index_t n = lengths_[std::size_t(b)] - drop;
      for (index_t h = 0; h < heads_; ++h) {
        std::copy_n(key_row(b, h, drop), n * head_dim_, key_row(b, h, 0));
        std::copy_n(value_row(b, h, drop), n * value_dim_, value_row(b, h, 0));
      }
      lengths_[std::size_t(b)] = n;
    }
    norms_.drop_front(drop / block);
    first_position_ += drop;
  }

  index_t batch_, heads_, head_dim_, value_dim_, keep_last_;
  index_t capacity_ = 0, first_position_ = 0;
  std::vector<index_t> lengths_;
  detail::cache_vector<T> keys_, values_;
  detail::KeyNormBounds norms_;
};

/// Attention of q [B, Sq, Hq, D] against everything `cache` holds: keys at absolute positions
/// from cache.first_position(), each batch row over its own length (Params::key_offset and
/// seqlens_k are set from the cache and must be left unset). With the default causal mask and
/// bottom-right alignment, q is the newest Sq tokens (already appended). Uses the cache's key
/// norm bounds for the tail skip; a short q against a long cache splits the keys over threads
/// and merges (bitwise the same result for any thread count).
template <class T>
void attention(TensorView<const detail::nondeduced<T>> q, const KVCache<T>& cache,
               TensorView<T> out, Params params = {}, float* lse = nullptr) {
  const char* fn = "alibi::attention(KVCache)";
  if (params.key_offset || !params.seqlens_k.empty())
    detail::fail(fn,
                 "params.key_offset and params.seqlens_k come from the cache; leave them unset");
  params.key_offset = cache.first_position();
  params.seqlens_k = cache.lengths();
  const TensorView<const T> k = cache.keys(), v = cache.values();
  const detail::Geometry g = detail::validate_forward(fn, q, k, v, out, params, lse);
  detail::forward_views(g, q, k, v, out, lse, params.num_threads, params.stats, &cache.norms());
}

}  // namespace alibi
