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

/// x rounded to a float no smaller than it (NaN stays NaN).
inline float round_up_to_float(double x) {
  const float f = static_cast<float>(x);
  return double(f) < x ? std::nextafter(f, HUGE_VALF) : f;
}

/// max that keeps NaN: a NaN key norm must disable the skip, not vanish.
inline float nan_max(float a, float b) {
  return !std::isnan(a) && (std::isnan(b) || b > a) ? b : a;
}

/// Upper bounds of key norms over any prefix or suffix of a (batch, kv head)'s keys, from maxima
/// over blocks of 64 keys. Prefix maxima are kept as keys are added (a KV cache adds a token at a
/// time: O(new keys)); suffix maxima, needed only when keys lie after a query (not causal), are
/// computed on request.
class KeyNormBounds {
 public:
  static constexpr index_t block = 64;

  KeyNormBounds() = default;
  /// Room for `keys` keys per (b, kv), all norms 0.
  KeyNormBounds(index_t batch, index_t heads, index_t keys)
      : heads_(heads),
        blocks_((keys + block - 1) / block),
        block_max_(std::size_t(batch * heads * blocks_), 0.0f),
        prefix_(block_max_.size(), 0.0f) {}

  /// The valid keys of `k` (per batch row its first `valid[b]` keys, all when `valid` is empty),
  /// measured in one pass (tasks over (b, kv) on `threads` threads); the suffix maxima too when
  /// `suffix`. Keys past a row's valid count are never read (a cache's unwritten tail).
  template <class T>
  static KeyNormBounds measure(const TensorView<const T>& k, int threads,
                               const std::vector<index_t>& valid = {}, bool suffix = false) {
    KeyNormBounds bounds(k.batch(), k.heads(), k.seq());
    parallel_tasks(k.batch() * k.heads(), threads, [&] {
      return [&](index_t pair) {
        const index_t b = pair / k.heads();
        // Each task writes only its own (b, kv)'s maxima: no shared state.
        bounds.fold_keys(k, b, pair % k.heads(), 0, valid.empty() ? k.seq() : valid[b]);
      };
    });
    if (suffix) bounds.prepare_suffix();
    return bounds;
  }

  /// Folds the norms of keys [begin, end) of (b, kv) of `k` (indexed as stored) into the maxima.
  template <class T>
  void add_keys(const TensorView<const T>& k, index_t b, index_t kv, index_t begin, index_t end) {
    fold_keys(k, b, kv, begin, end);
    suffix_ready_ = false;
  }

  /// Room for `keys` keys per (b, kv), keeping what is there.
  void reserve(index_t batch, index_t keys) {
    const index_t blocks = (keys + block - 1) / block;
    if (blocks <= blocks_) return;
    std::vector<float> maxima(std::size_t(batch * heads_ * blocks), 0.0f),
        prefix(maxima.size(), 0.0f);
    for (index_t row = 0; row < batch * heads_; ++row)
      for (index_t i = 0; i < blocks_; ++i) {
        maxima[std::size_t(row * blocks + i)] = block_max_[std::size_t(row * blocks_ + i)];
        prefix[std::size_t(row * blocks + i)] = prefix_[std::size_t(row * blocks_ + i)];
      }
    block_max_.swap(maxima);
    prefix_.swap(prefix);
    blocks_ = blocks;
    suffix_ready_ = false;
  }

  /// Forgets the first `blocks` blocks of every (b, kv): their keys were dropped from the front.
  void drop_front(index_t blocks) {
    for (index_t row = 0; row * blocks_ < index_t(block_max_.size()); ++row) {
      float* maxima = block_max_.data() + row * blocks_;
      std::copy(maxima + blocks, maxima + blocks_, maxima);
      std::fill(maxima + blocks_ - blocks, maxima + blocks_, 0.0f);
      float* prefix = prefix_.data() + row * blocks_;
      float running = 0;
      for (index_t i = 0; i < blocks_; ++i) prefix[i] = running = nan_max(running, maxima[i]);
    }
    suffix_ready_ = false;
  }

  /// Suffix maxima, for calls with keys after their queries.
  void prepare_suffix() {
    if (suffix_ready_) return;
    suffix_.resize(block_max_.size());
    for (index_t row = 0; row * blocks_ < index_t(block_max_.size()); ++row) {
      float running = 0;
      for (index_t i = blocks_; i-- > 0;)
        suffix_[std::size_t(row * blocks_ + i)] = running =
            nan_max(running, block_max_[std::size_t(row * blocks_ + i)]);
    }
    suffix_ready_ = true;
  }

  /// The largest key norm among keys [0, end) and [begin, ...) of (b, kv): upper bounds (whole
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
  /// add_keys without touching the suffix flag, so that tasks over distinct (b, kv) may run it
  /// concurrently.
  template <class T>
  void fold_keys(const TensorView<const T>& k, index_t b, index_t kv, index_t begin, index_t end) {
    if (end <= begin) return;
    float* maxima = block_max_.data() + (b * heads_ + kv) * blocks_;
    for (index_t t = begin; t < end; ++t) {
      const T* key = k.row(b, t, kv);
      double squares = 0;
      for (index_t d = 0; d < k.head_dim(); ++d) {
        const double x = double(key[d * k.strides[3]]);
        squares += x * x;
      }
      // Rounded up to float: the bound must stay an upper bound.
      maxima[t / block] = nan_max(maxima[t / block], round_up_to_float(std::sqrt(squares)));
    }
    // Later blocks hold no keys yet, so the prefix maxima change only up to the last new block.
    float* prefix = prefix_.data() + (b * heads_ + kv) * blocks_;
    for (index_t i = begin / block; i <= (end - 1) / block; ++i)
      prefix[i] = nan_max(i == 0 ? 0.0f : prefix[i - 1], maxima[i]);
  }

  index_t heads_ = 0, blocks_ = 0;
  std::vector<float> block_max_, prefix_, suffix_;
  bool suffix_ready_ = false;
};

/// How far the kernel's logits, in a type of unit round-off `round_off` (2^-24 for float) over
/// head_dim `dim`, may lie above the exact ones, relative to each term (Higham's gamma_n): the
/// dot product of a D-long sum carries gamma_D |q| |k|, the bias and the running max one
/// rounding each. A bound that adds these stays a proof for any D.
struct LogitRoundOff {
  double dot = 0, bias = 0;  // relative to |q| |k| and to m d + |M|

  static LogitRoundOff of(double round_off, index_t dim) {
    const double n = double(dim + 2) * round_off;  // D products and sums, the scale, the norm
    return {n < 0.5 ? n / (1 - n) : HUGE_VAL, 4 * round_off};
  }
};

/// The bound above for one side of one row: keys from distance `distance` on, the largest of
/// their norms `key_norm`, their logits computed with `round_off` error at most. Infinite when
/// it cannot bound (distance or slope not positive).
inline double tail_weight(double query_norm, double key_norm, double slope, index_t distance,
                          double max, const LogitRoundOff& round_off) {
  if (!(slope > 0) || distance <= 0) return HUGE_VAL;
  const double dot = query_norm * key_norm, bias = slope * double(distance);
  const double exponent =
      dot * (1 + round_off.dot) - bias - max + round_off.bias * (bias + std::fabs(max));
  return std::exp(exponent) / -std::expm1(-slope);
}

}  // namespace detail
}  // namespace alibi
