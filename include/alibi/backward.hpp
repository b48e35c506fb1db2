#pragma once
// alibi::attention_backward, the gradients of alibi::attention. The two passes are in
// detail/backward.hpp.

#include "detail/backward.hpp"
#include "detail/validate_backward.hpp"
#include "params.hpp"
#include "tensor_view.hpp"

namespace alibi {

/// Gradients of alibi::attention: given q, k, v, the forward's out and lse, and dout = dL/dout,
/// writes dq, dk, dv (shaped like q, k, v; with GQA, dk and dv sum over the query heads of a
/// group) and, when dslopes is not null, dL/dm with the shape of params.slopes (Hq values when
/// params.slopes is empty or per head, B * Hq when per (batch, head)) and, when dsink_logits is
/// not null and params.sink_logits is not empty, dL/ds for each learned sink (Hq values: the sum
/// over that head's rows of -P_sink rowsum(dout out)). Same semantics and params
/// as the forward (tail_tolerance is not used: every allowed key counts). Recomputes P per tile
/// from lse (FlashAttention-2's algorithm), extra memory O(threads x tile), and gives the same
/// result for any thread count. Throws std::invalid_argument, before writing anything, on
/// shapes that disagree, null lse, or gradients that overlap each other or an input.
template <class T>
void attention_backward(TensorView<const detail::nondeduced<T>> q,
                        TensorView<const detail::nondeduced<T>> k,
                        TensorView<const detail::nondeduced<T>> v,
                        TensorView<const detail::nondeduced<T>> out,
                        TensorView<const detail::nondeduced<T>> dout, const float* lse,
                        TensorView<T> dq, TensorView<T> dk, TensorView<T> dv,
                        const Params& params = {}, float* dslopes = nullptr,
                        float* dsink_logits = nullptr) {
  static_assert(detail::is_element<T>::value,
                "alibi::attention_backward: T must be float, double, Eigen::half or "
                "Eigen::bfloat16");
  const detail::Geometry g = detail::validate_backward("alibi::attention_backward", q, k, v, out,
                                                       dout, lse, dq, dk, dv, params);
  detail::backward(g, detail::BackwardViews<T>{q, k, v, out, dout, lse, dq, dk, dv},
                   params.num_threads, dslopes, dsink_logits);
}

}  // namespace alibi
