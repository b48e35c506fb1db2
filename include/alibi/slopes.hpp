#pragma once
// The per-head slopes of Press et al. (ALiBi), shared by BLOOM, MPT, ggml and FlashAttention users.

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace alibi {

/// Slope of global head `head` (0-based) in a model with `num_heads` heads.
///
/// Power-of-two head counts: m_h = 2^(-max_bias * (h + 1) / H). Otherwise, with c the largest
/// power of two below H: the c slopes of a c-head model, then the even-indexed slopes of a
/// 2c-head model. Computed in double, rounded once to float.
/// Throws std::invalid_argument when num_heads < 1, head is outside [0, num_heads), or max_bias
/// is not finite.
inline float slope(int head, int num_heads, float max_bias = 8.0f) {
  if (num_heads < 1)
    throw std::invalid_argument("alibi::slope: num_heads must be >= 1, got " +
                                std::to_string(num_heads));
  if (head < 0 || head >= num_heads)
    throw std::invalid_argument("alibi::slope: head " + std::to_string(head) + " is outside [0, " +
                                std::to_string(num_heads) + ")");
  if (!std::isfinite(max_bias))
    throw std::invalid_argument("alibi::slope: max_bias must be finite");
  int closest_power = 1;
  while (closest_power <= num_heads / 2) closest_power *= 2;  // closest_power * 2 may overflow
  // Exponents are exact small rationals; exp2 in double is correctly rounded enough that the final
  // float rounding dominates.
  const double exponent =
      head < closest_power
          ? double(max_bias) * (head + 1) / closest_power
          : double(max_bias) * (2 * (head - closest_power) + 1) / (2.0 * closest_power);
  return static_cast<float>(std::exp2(-exponent));
}

/// Slopes of heads [first_head, first_head + count) of a `num_heads`-head model: what one
/// tensor-parallel shard of the heads needs (global head indices, not a smaller model's).
///
///     auto shard = alibi::slopes(32, /*first_head=*/8, /*count=*/8);   // heads 8..15 of 32
inline std::vector<float> slopes(int num_heads, int first_head, int count, float max_bias = 8.0f) {
  if (count < 0 || first_head < 0 || first_head > num_heads - count)
    throw std::invalid_argument("alibi::slopes: heads [" + std::to_string(first_head) + ", " +
                                std::to_string(first_head) + " + " + std::to_string(count) +
                                ") are not inside [0, " + std::to_string(num_heads) + ")");
  std::vector<float> result;
  result.reserve(static_cast<std::size_t>(count));
  for (int h = first_head; h < first_head + count; ++h)
    result.push_back(slope(h, num_heads, max_bias));
  return result;
}

/// All `num_heads` slopes, e.g. `alibi::slopes(8)` = {1/2, 1/4, ..., 1/256}.
inline std::vector<float> slopes(int num_heads, float max_bias = 8.0f) {
  if (num_heads < 1)
    throw std::invalid_argument("alibi::slopes: num_heads must be >= 1, got " +
                                std::to_string(num_heads));
  return slopes(num_heads, 0, num_heads, max_bias);
}

}  // namespace alibi
