#pragma once
// alibi::attention_varlen and attention_varlen_backward: packed sequences of different lengths
// in one buffer, without padding (FlashAttention's flash_attn_varlen_func). The same kernels as
// alibi::attention: the sequences become segments of one batch row (Geometry::cu_seqlens_*),
// whose query blocks never straddle two sequences and whose rows attend only their own keys.

#include <string>
#include <vector>

#include "backward.hpp"
#include "detail/backward.hpp"
#include "detail/split_kv.hpp"
#include "detail/validate.hpp"
#include "detail/validate_backward.hpp"
#include "params.hpp"
#include "reference.hpp"
#include "tensor_view.hpp"

namespace alibi {
namespace detail {

/// cu (B + 1 offsets into `total` rows of `tensor`) starts at 0, never decreases and ends at
/// `total`.
inline void check_cu_seqlens(const char* fn, const char* name, const std::vector<index_t>& cu,
                             std::size_t count, index_t total, const char* tensor) {
  const auto list = [&] {
    std::string s = "{";
    for (std::size_t i = 0; i < cu.size() && i < 8; ++i) s += (i ? ", " : "") + std::to_string(cu[i]);
    return s + (cu.size() > 8 ? ", ...}" : "}");
  };
  if (cu.size() != count)
    fail(fn, std::string(name) + " has " + std::to_string(cu.size()) + " offsets " + list() +
                 " but needs " + std::to_string(count) + " (the number of sequences + 1)");
  if (cu.front() != 0)
    fail(fn, std::string(name) + "[0] = " + std::to_string(cu.front()) + " must be 0: " + list());
  for (std::size_t i = 1; i < cu.size(); ++i)
    if (cu[i] < cu[i - 1])
      fail(fn, std::string(name) + " decreases at " + std::to_string(i) + ": " +
                   std::to_string(cu[i - 1]) + " then " + std::to_string(cu[i]) + " in " + list());
  if (cu.back() != total)
    fail(fn, std::string(name) + " ends at " + std::to_string(cu.back()) + " but " + tensor +
                 " holds " + std::to_string(total) + " rows (seq of [1, total, heads, dim]): " +
                 list());
}

/// The packed call's own checks (batch 1, the offsets, params that have no meaning for packed
/// sequences), then its sequences put into the geometry.
template <class T>
void set_packed(const char* fn, Geometry& g, const TensorView<const T>& q,
                const std::vector<index_t>& cu_seqlens_q, const std::vector<index_t>& cu_seqlens_k,
                const Params& params) {
  if (q.batch() != 1)
    fail(fn, "q has batch " + std::to_string(q.batch()) +
                 ": packed sequences are [1, total, heads, dim] views (shape " +
                 shape_string(q.shape) + ")");
  if (cu_seqlens_q.empty())
    fail(fn, "cu_seqlens_q is empty: it needs the number of sequences + 1 offsets");
  check_cu_seqlens(fn, "cu_seqlens_q", cu_seqlens_q, cu_seqlens_q.size(), g.seq_q, "q");
  check_cu_seqlens(fn, "cu_seqlens_k", cu_seqlens_k, cu_seqlens_q.size(), g.seq_k, "k");
  if (params.query_offset || params.key_offset)
    fail(fn, "params.query_offset and key_offset must be unset: each sequence is bottom-right "
             "aligned to its own keys");
  if (!params.seqlens_k.empty() || !params.seqlens_q.empty())
    fail(fn, "params.seqlens_k and seqlens_q must be empty: cu_seqlens_q and cu_seqlens_k give "
             "the lengths");
  g.cu_seqlens_q = cu_seqlens_q;
  g.cu_seqlens_k = cu_seqlens_k;
}

/// Rows [begin, end) of a [1, total, heads, dim] view.
template <class T>
TensorView<T> packed_rows(const TensorView<T>& x, index_t begin, index_t end) {
  return {x.data + begin * x.strides[1], {1, end - begin, x.shape[2], x.shape[3]}, x.strides};
}

}  // namespace detail

/// ALiBi attention over packed sequences (FlashAttention's flash_attn_varlen_func): q
/// [1, total_q, Hq, D], k [1, total_k, Hkv, D], v [1, total_k, Hkv, Dv], out [1, total_q, Hq, Dv];
/// `cu_seqlens_q` and `cu_seqlens_k` hold B + 1 offsets (0, then each sequence's end): sequence b
/// is the queries [cu_seqlens_q[b], cu_seqlens_q[b + 1]) and the keys [cu_seqlens_k[b],
/// cu_seqlens_k[b + 1]). Its queries attend only its keys, bottom-right aligned to them (its last
/// query at its last key), with every Params option of alibi::attention (causal or not, windows,
/// slopes per head, scale, tail skip, threads) except query_offset, key_offset, seqlens_k and
/// seqlens_q, which must be unset. The same kernel as alibi::attention: one call for all
/// sequences, no padding. `lse`, when not null, is [Hq, total_q]. Throws std::invalid_argument,
/// before anything is written, on bad shapes (batch other than 1) or offsets (a count other than
/// B + 1, not starting at 0, decreasing, not ending at the totals).
///
///     // two documents of 300 and 170 tokens, packed: 470 rows
///     alibi::attention_varlen(q, k, v, {0, 300, 470}, {0, 300, 470}, out);
template <class T>
void attention_varlen(TensorView<const detail::nondeduced<T>> q,
                      TensorView<const detail::nondeduced<T>> k,
                      TensorView<const detail::nondeduced<T>> v,
                      const std::vector<index_t>& cu_seqlens_q,
                      const std::vector<index_t>& cu_seqlens_k, TensorView<T> out,
                      const Params& params = {}, float* lse = nullptr) {
  static_assert(detail::is_element<T>::value,
                "alibi::attention_varlen: T must be float, double, Eigen::half or Eigen::bfloat16");
  const char* fn = "alibi::attention_varlen";
  detail::Geometry g = detail::validate_forward(fn, q, k, v, out, params, lse);
  detail::set_packed(fn, g, q, cu_seqlens_q, cu_seqlens_k, params);
  detail::forward_views(g, q, k, v, out, lse, params.num_threads, params.stats);
}

/// Gradients of alibi::attention_varlen: the arguments of alibi::attention_backward (lse
/// [Hq, total_q] from the forward) plus the same offsets. dk and dv of keys no query attends are 0.
template <class T>
void attention_varlen_backward(
    TensorView<const detail::nondeduced<T>> q, TensorView<const detail::nondeduced<T>> k,
    TensorView<const detail::nondeduced<T>> v, TensorView<const detail::nondeduced<T>> out,
    TensorView<const detail::nondeduced<T>> dout, const float* lse,
    const std::vector<index_t>& cu_seqlens_q, const std::vector<index_t>& cu_seqlens_k,
    TensorView<T> dq, TensorView<T> dk, TensorView<T> dv, const Params& params = {},
    float* dslopes = nullptr) {
  static_assert(detail::is_element<T>::value,
                "alibi::attention_varlen_backward: T must be float, double, Eigen::half or "
                "Eigen::bfloat16");
  const char* fn = "alibi::attention_varlen_backward";
  detail::Geometry g =
      detail::validate_backward(fn, q, k, v, out, dout, lse, dq, dk, dv, params);
  detail::set_packed(fn, g, q, cu_seqlens_q, cu_seqlens_k, params);
  detail::backward(g, detail::BackwardViews<T>{q, k, v, out, dout, lse, dq, dk, dv},
                   params.num_threads, dslopes);
}

namespace reference {

/// alibi::attention_varlen by its definition: alibi::reference::attention on each sequence
/// alone (its rows of q, k, v and out), in double. The oracle of the packed kernel.
template <class T>
void attention_varlen(TensorView<const detail::nondeduced<T>> q,
                      TensorView<const detail::nondeduced<T>> k,
                      TensorView<const detail::nondeduced<T>> v,
                      const std::vector<index_t>& cu_seqlens_q,
                      const std::vector<index_t>& cu_seqlens_k, TensorView<T> out,
                      const Params& params = {}, float* lse = nullptr) {
  const char* fn = "alibi::reference::attention_varlen";
  detail::Geometry g = detail::validate_forward(fn, q, k, v, out, params, lse);
  detail::set_packed(fn, g, q, cu_seqlens_q, cu_seqlens_k, params);
  const index_t total_q = q.seq(), heads = q.heads();
  for (std::size_t s = 0; s + 1 < cu_seqlens_q.size(); ++s) {
    const index_t q0 = cu_seqlens_q[s], q1 = cu_seqlens_q[s + 1];
    std::vector<float> part(std::size_t(heads * (q1 - q0)));
    reference::attention<T>(detail::packed_rows(q, q0, q1),
                 detail::packed_rows(k, cu_seqlens_k[s], cu_seqlens_k[s + 1]),
                 detail::packed_rows(v, cu_seqlens_k[s], cu_seqlens_k[s + 1]),
                 detail::packed_rows(out, q0, q1), params, part.data());
    if (lse != nullptr)
      for (index_t h = 0; h < heads; ++h)
        for (index_t i = q0; i < q1; ++i)
          lse[h * total_q + i] = part[std::size_t(h * (q1 - q0) + i - q0)];
  }
}

/// alibi::attention_varlen_backward by its definition: alibi::reference::attention_backward on
/// each sequence alone; dslopes summed over the sequences.
template <class T>
void attention_varlen_backward(
    TensorView<const detail::nondeduced<T>> q, TensorView<const detail::nondeduced<T>> k,
    TensorView<const detail::nondeduced<T>> v, TensorView<const detail::nondeduced<T>> out,
    TensorView<const detail::nondeduced<T>> dout, const float* lse,
    const std::vector<index_t>& cu_seqlens_q, const std::vector<index_t>& cu_seqlens_k,
    TensorView<T> dq, TensorView<T> dk, TensorView<T> dv, const Params& params = {},
    float* dslopes = nullptr) {
  const char* fn = "alibi::reference::attention_varlen_backward";
  detail::Geometry g = detail::validate_backward(fn, q, k, v, out, dout, lse, dq, dk, dv, params);
  detail::set_packed(fn, g, q, cu_seqlens_q, cu_seqlens_k, params);
  const index_t total_q = q.seq(), heads = q.heads();
  std::vector<double> slope_sum(g.slopes.size(), 0.0);
  std::vector<float> part_slopes(g.slopes.size());
  for (std::size_t s = 0; s + 1 < cu_seqlens_q.size(); ++s) {
    const index_t q0 = cu_seqlens_q[s], q1 = cu_seqlens_q[s + 1];
    const index_t k0 = cu_seqlens_k[s], k1 = cu_seqlens_k[s + 1];
    std::vector<float> part_lse(std::size_t(heads * (q1 - q0)));
    for (index_t h = 0; h < heads; ++h)
      for (index_t i = q0; i < q1; ++i)
        part_lse[std::size_t(h * (q1 - q0) + i - q0)] = lse[h * total_q + i];
    reference::attention_backward<T>(detail::packed_rows(q, q0, q1), detail::packed_rows(k, k0, k1),
                          detail::packed_rows(v, k0, k1), detail::packed_rows(out, q0, q1),
                          detail::packed_rows(dout, q0, q1), part_lse.data(),
                          detail::packed_rows(dq, q0, q1), detail::packed_rows(dk, k0, k1),
                          detail::packed_rows(dv, k0, k1), params, part_slopes.data());
    for (std::size_t j = 0; j < slope_sum.size(); ++j) slope_sum[j] += double(part_slopes[j]);
  }
  if (dslopes != nullptr)
    for (std::size_t j = 0; j < slope_sum.size(); ++j) dslopes[j] = float(slope_sum[j]);
}

}  // namespace reference
}  // namespace alibi
