#pragma once
// Partial attention results over disjoint key ranges, each with its lse, combined into the result
// over their union: what split-KV decoding and sequence-parallel (ring) attention are built on.

#include <cmath>
#include <limits>
#include <string>

#include "detail/numeric.hpp"
#include "detail/validate.hpp"
#include "tensor_view.hpp"

namespace alibi {

/// out = (e^lse_a out_a + e^lse_b out_b) / (e^lse_a + e^lse_b) and lse = log(e^lse_a + e^lse_b),
/// row by row: given alibi::attention over keys A (out_a, lse_a) and over keys B (out_b, lse_b)
/// with the same queries and explicit positions (Params::query_offset and key_offset), this is
/// attention over A and B together, exact up to float round-off. All outputs are [B, Sq, H, Dv]
/// and all lse contiguous [B, H, Sq], as alibi::attention writes them. A row empty in both
/// (lse -inf) gets out = 0 and lse = -inf. `out` and `lse` may be the same memory as the a (or
/// b) inputs, to accumulate partials in place; any other overlap throws std::invalid_argument,
/// as do shapes that differ and null lse.
///
///     alibi::merge(out_a, lse_a.data(), out_b, lse_b.data(), out_a, lse_a.data());   // a += b
template <class T>
void merge(TensorView<const detail::nondeduced<T>> out_a, const float* lse_a,
           TensorView<const detail::nondeduced<T>> out_b, const float* lse_b, TensorView<T> out,
           float* lse) {
  static_assert(detail::is_element<T>::value,
                "alibi::merge: T must be float, double, Eigen::half or Eigen::bfloat16");
  const char* fn = "alibi::merge";
  detail::check_view(fn, "out_a", out_a);
  detail::check_view(fn, "out_b", out_b);
  detail::check_view(fn, "out", out);
  if (out_b.shape != out_a.shape || out.shape != out_a.shape)
    detail::fail(fn, "out_a " + detail::shape_string(out_a.shape) + ", out_b " +
                         detail::shape_string(out_b.shape) + " and out " +
                         detail::shape_string(out.shape) + " must have the same shape");
  const index_t rows = out.batch() * out.seq() * out.heads();
  if (rows > 0 && (lse_a == nullptr || lse_b == nullptr || lse == nullptr))
    detail::fail(fn, "lse_a, lse_b and lse must not be null (" + std::to_string(rows) + " rows)");
  detail::check_distinct_elements(fn, "out", out);
  const auto same_view = [&](const TensorView<const T>& x) {
    return x.data == out.data && x.strides == out.strides;
  };
  const detail::ByteSpan out_span = detail::byte_span(fn, "out", out);
  if ((!same_view(out_a) && out_span.overlaps(detail::byte_span(fn, "out_a", out_a))) ||
      (!same_view(out_b) && out_span.overlaps(detail::byte_span(fn, "out_b", out_b))))
    detail::fail(fn, "out " + detail::shape_string(out.shape) +
                         " overlaps out_a or out_b without being the same view");
  const auto lse_bytes = static_cast<std::uintptr_t>(rows) * sizeof(float);
  const auto span_of = [&](const float* p) {
    const auto base = reinterpret_cast<std::uintptr_t>(p);
    return detail::ByteSpan{base, base + lse_bytes};
  };
  const detail::ByteSpan lse_span = span_of(lse);
  if ((lse != lse_a && lse_span.overlaps(span_of(lse_a))) ||
      (lse != lse_b && lse_span.overlaps(span_of(lse_b))) || lse_span.overlaps(out_span))
    detail::fail(fn, "lse [" + std::to_string(rows) +
                         " floats] overlaps lse_a, lse_b or out without being the same memory");

  using Acc = detail::accum_t<T>;
  const Acc minus_inf = -std::numeric_limits<Acc>::infinity();
  for (index_t b = 0; b < out.batch(); ++b)
    for (index_t h = 0; h < out.heads(); ++h)
      for (index_t i = 0; i < out.seq(); ++i) {
        const index_t row = (b * out.heads() + h) * out.seq() + i;
        const Acc la = lse_a[row], lb = lse_b[row];
        const Acc m = la > lb ? la : lb;
        T* dst = out.row(b, i, h);
        const T* a = out_a.row(b, i, h);
        const T* c = out_b.row(b, i, h);
        if (m == minus_inf || std::isnan(la) || std::isnan(lb)) {
          const Acc fill = m == minus_inf ? Acc(0) : std::numeric_limits<Acc>::quiet_NaN();
          for (index_t d = 0; d < out.head_dim(); ++d) dst[d * out.strides[3]] = T(fill);
          lse[row] = m == minus_inf ? float(minus_inf) : std::numeric_limits<float>::quiet_NaN();
          continue;
        }
        const Acc wa = std::exp(la - m), wb = std::exp(lb - m), total = wa + wb;
        for (index_t d = 0; d < out.head_dim(); ++d)
          dst[d * out.strides[3]] =
              T((wa * Acc(a[d * out_a.strides[3]]) + wb * Acc(c[d * out_b.strides[3]])) / total);
        lse[row] = float(m + std::log(total));
      }
}

}  // namespace alibi
