#pragma once
// Partial attention results over disjoint key ranges, each with its lse, combined into the result
// over their union: what split-KV decoding and sequence-parallel (ring) attention are built on.

#include <cmath>
#include <limits>
#include <string>

#include "detail/numeric.hpp"
#include "detail/overlap.hpp"
#include "detail/validate.hpp"
#include "tensor_view.hpp"

namespace alibi {

/// out = (e^lse_a out_a + e^lse_b out_b) / (e^lse_a + e^lse_b) and lse = log(e^lse_a + e^lse_b),
/// row by row: given alibi::attention over keys A (out_a, lse_a) and over keys B (out_b, lse_b)
/// with the same queries and explicit positions (Params::query_offset and key_offset), this is
/// attention over A and B together, exact up to float round-off of the lse: the weights
/// e^(lse_a - lse_b) carry |lse| x 2^-24 of error, so merges of rows whose keys are all very far
/// (|lse| of 10^4 and more) lose digits; alibi::attention's own split decode merges through an
/// lse relative to each row's bias offset and is exact at any distance. All outputs are [B, Sq, H,
/// Dv] and all lse contiguous [B, H, Sq], as alibi::attention writes them. A row empty in both (lse
/// -inf) gets out = 0 and lse = -inf. `out` and `lse` may be the same memory as the a (or b)
/// inputs, to accumulate partials in place; any other overlap throws std::invalid_argument, as do
/// shapes that differ and null lse.
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
  // In place (out the very view of out_a or out_b, lse the same memory as theirs) reads each
  // element before writing it; any other sharing of an element is refused (overlap.hpp).
  const auto same_view = [&](const TensorView<const T>& x) {
    return x.data == out.data && x.strides == out.strides;
  };
  const auto lse_elements = [&](const float* p) {
    return detail::lattice_of_array(p, rows, index_t(sizeof(float)));
  };
  const detail::ByteLattice out_elements = detail::lattice_of(out), lse_out = lse_elements(lse);
  const detail::ByteLattice a_elements = detail::lattice_of(out_a),
                            b_elements = detail::lattice_of(out_b);
  const detail::ByteLattice la_elements = lse_elements(lse_a), lb_elements = lse_elements(lse_b);
  if ((!same_view(out_a) && detail::share_bytes(out_elements, a_elements)) ||
      (!same_view(out_b) && detail::share_bytes(out_elements, b_elements)))
    detail::fail(fn, "out " + detail::shape_string(out.shape) +
                         " overlaps out_a or out_b without being the same view");
  if (detail::share_bytes(out_elements, la_elements) ||
      detail::share_bytes(out_elements, lb_elements))
    detail::fail(fn, "out " + detail::shape_string(out.shape) + " overlaps lse_a or lse_b [" +
                         std::to_string(rows) + " floats] in memory");
  if ((lse != lse_a && detail::share_bytes(lse_out, la_elements)) ||
      (lse != lse_b && detail::share_bytes(lse_out, lb_elements)) ||
      detail::share_bytes(lse_out, out_elements) || detail::share_bytes(lse_out, a_elements) ||
      detail::share_bytes(lse_out, b_elements))
    detail::fail(fn, "lse [" + std::to_string(rows) +
                         " floats] overlaps lse_a, lse_b, out, out_a or out_b without being the "
                         "same memory");

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
