#pragma once
// The obviously correct ALiBi attention, the oracle of the tests: every logit materialised in
// double, the mask decided elementwise, one plain softmax per row. Slow and O(Sq x Sk) memory.

#include <cmath>
#include <limits>
#include <vector>

#include "detail/numeric.hpp"
#include "detail/validate.hpp"
#include "params.hpp"
#include "tensor_view.hpp"

namespace alibi {
namespace reference {

/// Same contract and signature as alibi::attention, computed in double, single-threaded.
template <class T>
void attention(TensorView<const detail::nondeduced<T>> q, TensorView<const detail::nondeduced<T>> k,
               TensorView<const detail::nondeduced<T>> v, TensorView<T> out,
               const Params& params = {}, float* lse = nullptr) {
  static_assert(detail::is_element<T>::value,
                "alibi::reference::attention: T must be float, double, Eigen::half or "
                "Eigen::bfloat16");
  const detail::Geometry g =
      detail::validate_forward("alibi::reference::attention", q, k, v, out, params, lse);
  const double minus_inf = -std::numeric_limits<double>::infinity();
  std::vector<double> logits(static_cast<std::size_t>(g.seq_k));
  std::vector<double> row(static_cast<std::size_t>(g.value_dim));
  for (index_t b = 0; b < g.batch; ++b)
    for (index_t h = 0; h < g.heads_q; ++h)
      for (index_t i = 0; i < g.seq_q; ++i) {
        const index_t p = g.query_position(b, i);
        double max = minus_inf;
        for (index_t t = 0; t < g.seq_k; ++t) {
          const index_t key = g.key_position(t);
          if (t >= g.valid_keys(b) || !g.allowed(p, key)) {
            logits[t] = minus_inf;
            continue;
          }
          double dot = 0;
          for (index_t d = 0; d < g.head_dim; ++d)
            dot += double(q(b, i, h, d)) * double(k(b, t, g.kv_head(h), d));
          const double distance = static_cast<double>(p > key ? p - key : key - p);
          logits[t] = double(g.scale) * dot - double(g.slope(b, h)) * distance;
          max = std::isnan(logits[t]) || logits[t] > max ? logits[t] : max;
        }
        double sum = 0;
        std::fill(row.begin(), row.end(), 0.0);
        if (max != minus_inf) {
          for (index_t t = 0; t < g.seq_k; ++t) {
            if (logits[t] == minus_inf) continue;
            const double w = std::exp(logits[t] - max);
            sum += w;
            for (index_t d = 0; d < g.value_dim; ++d)
              row[d] += w * double(v(b, t, g.kv_head(h), d));
          }
        }
        for (index_t d = 0; d < g.value_dim; ++d)
          out(b, i, h, d) = static_cast<T>(sum == 0 ? 0.0 : row[d] / sum);
        if (lse != nullptr)
          lse[(b * g.heads_q + h) * g.seq_q + i] =
              static_cast<float>(sum == 0 ? minus_inf : max + std::log(sum));
      }
}

}  // namespace reference
}  // namespace alibi
