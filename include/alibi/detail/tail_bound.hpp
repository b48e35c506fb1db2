#pragma once
// What the tail skip needs to bound the weight of keys it has not visited: the largest key norm
// over any prefix or suffix of a (batch, kv head)'s keys, from per-block maxima, and the bound
// itself.
//
// A key t at distance d from a query row with slope m > 0, scaled query q (norm |q|), running
// max M and running sum s (of exp(logit - M)) has exp(logit - M) <= exp(|q| K - m d - M) by
// Cauchy-Schwarz, K the largest norm among the remaining keys. Summed over remaining keys at
// distances d0, d0 + 1, ... this is at most exp(|q| K - m d0 - M) / (1 - exp(-m)). When the
// bound (both sides added when keys remain on both) is at most tolerance x s for every row, the
// remaining keys can move each normalised weight by at most about `tolerance` relative, and the
// output by at most about 2 x tolerance x max |v|.

#include <algorithm>
#include <cmath>
#include <vector>

#include "../tensor_view.hpp"
#include "parallel.hpp"

namespace alibi {
namespace detail {

/// max that keeps NaN: a NaN key norm must disable the skip, not vanish.
inline float nan_max(float a, float b) {
  return !std::isnan(a) && (std::isnan(b) || b > a) ? b : a;
}

class KeyNormBounds {
 public:
  /// Keys per block of the maxima.
  static constexpr index_t block = 64;

  /// Measures every key of `k` (all Sk rows of every batch row and kv head): one pass over k.
  template <class T>
  static KeyNormBounds measure(const TensorView<const T>& k, int threads) {
    KeyNormBounds bounds(k.batch(), k.heads(), k.seq());
    parallel_tasks(k.batch() * k.heads(), threads, [&] {
      return [&](index_t pair) {
        const index_t b = pair / k.heads(), kv = pair % k.heads();
        float* maxima = bounds.block_max_.data() + pair * bounds.blocks_;
        for (index_t t = 0; t < k.seq(); ++t) {
          const T* key = k.row(b, t, kv);
          double squares = 0;
          for (index_t d = 0; d < k.head_dim(); ++d) {
            const double x = double(key[d * k.strides[3]]);
            squares += x * x;
          }
          float& m = maxima[t / block];
          m = nan_max(m, float(std::sqrt(squares)));
        }
      };
    });
    bounds.finish();
    return bounds;
  }

  /// From block maxima the caller keeps (a KV cache): blocks_per_row values per (b, kv), in
  /// (b * heads + kv) order.
  KeyNormBounds(index_t batch, index_t heads, index_t seq)
      : heads_(heads),
        blocks_((seq + block - 1) / block),
        block_max_(std::size_t(batch * heads * blocks_), 0.0f) {}
  float* block_maxima(index_t b, index_t kv) {
    return block_max_.data() + (b * heads_ + kv) * blocks_;
  }
  /// Turns the block maxima into prefix and suffix maxima; call once they are all set.
  void finish() {
    prefix_.resize(block_max_.size());
    suffix_.resize(block_max_.size());
    for (std::size_t row = 0; row * std::size_t(blocks_) < block_max_.size(); ++row) {
      const std::size_t first = row * std::size_t(blocks_), last = first + std::size_t(blocks_);
      float running = 0;
      for (std::size_t i = first; i < last; ++i)
        prefix_[i] = running = nan_max(running, block_max_[i]);
      running = 0;
      for (std::size_t i = last; i-- > first;)
        suffix_[i] = running = nan_max(running, block_max_[i]);
    }
  }

  /// The largest key norm among keys [0, end) and [begin, Sk) of (b, kv): upper bounds (whole
  /// blocks), NaN-safe (a NaN norm makes the bound NaN and the skip never fires).
  float before(index_t b, index_t kv, index_t end) const {
    return end <= 0 ? 0.0f : prefix_[std::size_t((b * heads_ + kv) * blocks_ + (end - 1) / block)];
  }
  float from(index_t b, index_t kv, index_t begin) const {
    return begin >= blocks_ * block
               ? 0.0f
               : suffix_[std::size_t((b * heads_ + kv) * blocks_ + begin / block)];
  }

 private:
  index_t heads_, blocks_;
  std::vector<float> block_max_, prefix_, suffix_;
};

/// The bound above for one side of one row: keys from distance `distance` on, the largest of
/// their norms `key_norm`. Infinite when it cannot bound (distance or slope not positive).
inline double tail_weight(double query_norm, double key_norm, double slope, index_t distance,
                          double max) {
  if (!(slope > 0) || distance <= 0) return HUGE_VAL;
  // Norms carry float round-off; a relative margin keeps the bound an upper bound.
  const double exponent = query_norm * key_norm * (1 + 1e-5) - slope * double(distance) - max;
  return std::exp(exponent) / -std::expm1(-slope);
}

}  // namespace detail
}  // namespace alibi
