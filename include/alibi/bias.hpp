#pragma once
// The ALiBi bias materialised, for users who keep their own attention code and only want the
// bias: the same conventions (positions, mask, slopes) as alibi::attention.

#include <limits>
#include <string>

#include <Eigen/Core>

#include "detail/validate.hpp"
#include "params.hpp"

namespace alibi {

/// A row-major float matrix, as the bias of one head is returned.
using BiasMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace detail {
inline Geometry bias_geometry(const char* fn, index_t batch, index_t heads, index_t seq_q,
                              index_t seq_k, const Params& params) {
  const std::string sizes = "batch " + std::to_string(batch) + ", heads " + std::to_string(heads) +
                            ", seq_q " + std::to_string(seq_q) + ", seq_k " + std::to_string(seq_k);
  if (batch < 0 || heads < 1 || seq_q < 0 || seq_k < 0)
    fail(fn, "needs batch >= 0, heads >= 1, seq_q >= 0 and seq_k >= 0, got " + sizes);
  index_t elements = 1;
  for (index_t n : {batch, heads, seq_q, seq_k})
    if (n > max_position || mul_overflows(elements, n, &elements) || elements > max_elements)
      fail(fn, "a bias of " + sizes + " has more elements than memory can hold");
  check_params(fn, params, batch, heads, seq_k);
  check_seqlens_q(fn, params, batch, seq_q);
  return Geometry(batch, seq_q, seq_k, heads, heads, /*head_dim=*/1, /*value_dim=*/1, params);
}

/// -slope * |p - t| where allowed, -inf elsewhere.
inline void fill_head_bias(const Geometry& g, index_t b, float slope, float* out) {
  for (index_t i = 0; i < g.seq_q; ++i) {
    const index_t p = g.query_position(b, i);
    const KeyRange range = g.query_keys(b, i);
    for (index_t t = 0; t < g.seq_k; ++t) {
      const index_t key = g.key_position(t);
      const index_t distance = p > key ? p - key : key - p;
      out[i * g.seq_k + t] = t >= range.begin && t < range.end
                                 ? -slope * static_cast<float>(distance)
                                 : -std::numeric_limits<float>::infinity();
    }
  }
}
}  // namespace detail

/// Fills `out`, row-major [batch, heads, seq_q, seq_k], with the additive ALiBi bias and mask
/// that alibi::attention applies after scaling q.kᵀ: -m_h * |p - t| where key t is allowed for
/// query i, -inf where it is masked. Slopes, positions, windows, seqlens_k and seqlens_q (padding
/// query rows are all -inf) come from `params`
/// (params.scale and num_threads are not used).
///
///     std::vector<float> bias(1 * 8 * 128 * 128);
///     alibi::fill_bias(bias.data(), 1, 8, 128, 128);   // causal, slopes(8)
inline void fill_bias(float* out, index_t batch, index_t heads, index_t seq_q, index_t seq_k,
                      const Params& params = {}) {
  const char* fn = "alibi::fill_bias";
  const detail::Geometry g = detail::bias_geometry(fn, batch, heads, seq_q, seq_k, params);
  if (out == nullptr && batch * heads * seq_q * seq_k > 0)
    detail::fail(fn, "out is null but the bias has " +
                         std::to_string(batch * heads * seq_q * seq_k) + " elements");
  for (index_t b = 0; b < batch; ++b)
    for (index_t h = 0; h < heads; ++h)
      detail::fill_head_bias(g, b, g.slope(b, h), out + ((b * heads + h) * seq_q) * seq_k);
}

/// The bias of one head with slope `slope` as a [seq_q, seq_k] matrix, for batch row `batch_row`
/// of params.seqlens_k and seqlens_q when set (params.slopes is not used).
///
///     alibi::BiasMatrix bias = alibi::bias_matrix(0.5f, 4, 4);   // causal: -0.5 * (i - t)
inline BiasMatrix bias_matrix(float slope, index_t seq_q, index_t seq_k, const Params& params = {},
                              index_t batch_row = 0) {
  const char* fn = "alibi::bias_matrix";
  Params single = params;
  single.slopes = {slope};
  const index_t batch = static_cast<index_t>(
      !params.seqlens_k.empty() ? params.seqlens_k.size()
                                : !params.seqlens_q.empty() ? params.seqlens_q.size() : 1);
  if (batch_row < 0 || batch_row >= batch)
    detail::fail(fn, "batch_row " + std::to_string(batch_row) + " is outside [0, " +
                         std::to_string(batch) + ")");
  const detail::Geometry g = detail::bias_geometry(fn, batch, 1, seq_q, seq_k, single);
  BiasMatrix bias(seq_q, seq_k);
  detail::fill_head_bias(g, batch_row, slope, bias.data());
  return bias;
}

}  // namespace alibi
