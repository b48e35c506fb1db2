#pragma once
// What the README's programs share: deterministic inputs, and the check of one batch row
// against alibi::reference::attention run on that row alone (its own tokens, no padding).

#include <alibi/alibi.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace readme {

using alibi::index_t;

/// n unit-normal floats from `seed`.
inline std::vector<float> normal_values(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(n);
  for (float& e : x) e = normal(rng);
  return x;
}

inline std::vector<float> values(std::size_t n, float frequency) {
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = std::sin(frequency * float(i) + 0.5f);
  return x;
}

/// The largest |got - want| over `rows` query rows of a [., ., H, D] buffer at `got`, against the
/// reference over q, k, v rows given as contiguous pointers of `n_q` and `n_k` tokens.
inline float row_error(const float* q, const float* k, const float* v, const float* got,
                       index_t n_q, index_t n_k, index_t heads, index_t dim,
                       const alibi::Params& params) {
  std::vector<float> want(std::size_t(n_q * heads * dim));
  alibi::reference::attention(alibi::make_view(q, 1, n_q, heads, dim),
                              alibi::make_view(k, 1, n_k, heads, dim),
                              alibi::make_view(v, 1, n_k, heads, dim),
                              alibi::make_view(want.data(), 1, n_q, heads, dim), params);
  float error = 0;
  for (std::size_t i = 0; i < want.size(); ++i) error = std::fmax(error, std::fabs(got[i] - want[i]));
  return error;
}

}  // namespace readme
