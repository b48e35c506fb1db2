#pragma once
// alibi::attention, the fused forward. Its schedule is in detail/split_kv.hpp, the tile loop in
// detail/forward.hpp.

#include "detail/split_kv.hpp"
#include "detail/validate.hpp"
#include "params.hpp"
#include "tensor_view.hpp"

namespace alibi {

/// ALiBi attention: out = softmax(scale * q kᵀ - m_h |p - t|, masked) v, fused and tiled.
///
/// q [B, Sq, Hq, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv], out [B, Sq, Hq, Dv], each with its own
/// strides. Hq must be a multiple of Hkv (query head h reads kv head h / (Hq / Hkv)). T is float,
/// double, Eigen::half or Eigen::bfloat16; arithmetic is in float (double for double). Masking,
/// positions, slopes and threads come from `params` (see alibi::Params). When `lse` is not null
/// it receives, contiguous [B, Hq, Sq], the natural log of each row's sum of exp(logit) over its
/// allowed keys, of the true biased logits. A row with no allowed key gets out = 0 and
/// lse = -inf. Extra memory is O(threads x tile), whatever Sk is; the result does not depend on
/// the thread count.
///
/// Throws std::invalid_argument, naming the argument and the sizes seen, before anything is
/// written, when shapes disagree, a size is invalid, data is null, out shares an element with an
/// input or with itself (element-exact: out may interleave with q, k and v in one packed
/// buffer), or params do not fit. Inputs may repeat elements (a stride of 0 broadcasts).
///
///     std::vector<float> q(B * S * H * D), k = q, v = q, out(q.size());
///     alibi::attention(alibi::make_view(q.data(), B, S, H, D), alibi::make_view(k.data(), B, S, H,
///     D),
///                      alibi::make_view(v.data(), B, S, H, D), alibi::make_view(out.data(), B, S,
///                      H, D));
template <class T>
void attention(TensorView<const detail::nondeduced<T>> q, TensorView<const detail::nondeduced<T>> k,
               TensorView<const detail::nondeduced<T>> v, TensorView<T> out,
               const Params& params = {}, float* lse = nullptr) {
  static_assert(detail::is_element<T>::value,
                "alibi::attention: T must be float, double, Eigen::half or Eigen::bfloat16");
  const detail::Geometry geometry =
      detail::validate_forward("alibi::attention", q, k, v, out, params, lse);
  detail::forward_views(geometry, q, k, v, out, lse, params.num_threads, params.stats);
}

}  // namespace alibi
