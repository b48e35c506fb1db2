#pragma once
// The obviously correct ALiBi attention, the oracle of the tests: every logit materialised in
// double, the mask decided elementwise, one plain softmax per row. Slow and O(Sq x Sk) memory.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "detail/numeric.hpp"
#include "detail/validate.hpp"
#include "detail/validate_backward.hpp"
#include "params.hpp"
#include "tensor_view.hpp"

namespace alibi {
namespace detail {

/// The logits of query i of head h in batch row b against every key, in double: -inf where
/// masked, and with `nearest`, the row's smallest distance to an allowed key, taken out of the
/// bias: -m (|p - t| - nearest). The softmax is unchanged and the logits stay small however far
/// the keys are (at 10^12 positions, -m |p - t| alone would round by 10^-4 in double); the true
/// lse is max + log(sum) - m nearest. Returns their max (NaN when a logit is NaN, -inf when
/// every key is masked).
template <class T>
double reference_logits(const Geometry& g, const TensorView<const T>& q,
                        const TensorView<const T>& k, index_t b, index_t h, index_t i,
                        std::vector<double>& logits, index_t& nearest) {
  const double minus_inf = -std::numeric_limits<double>::infinity();
  const index_t p = g.query_position(b, i);
  const auto distance = [&](index_t t) {
    const index_t key = g.key_position(t);
    return p > key ? p - key : key - p;
  };
  const auto valid = [&](index_t t) {
    return g.key_in_reach(b, i, t) && g.allowed(p, g.key_position(t));
  };
  nearest = 0;
  bool any = false;
  for (index_t t = 0; t < g.seq_k; ++t)
    if (valid(t)) {
      nearest = any ? std::min(nearest, distance(t)) : distance(t);
      any = true;
    }
  double max = minus_inf;
  for (index_t t = 0; t < g.seq_k; ++t) {
    double& logit = logits[std::size_t(t)];
    if (!valid(t)) {
      logit = minus_inf;
      continue;
    }
    double dot = 0;
    for (index_t d = 0; d < g.head_dim; ++d)
      dot += double(q(b, i, h, d)) * double(k(b, t, g.kv_head(h), d));
    logit = double(g.scale) * dot - double(g.slope(b, h)) * double(distance(t) - nearest);
    max = std::isnan(logit) || logit > max ? logit : max;
  }
  return max;
}

}  // namespace detail

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
        index_t nearest = 0;
        const double keys_max = detail::reference_logits(g, q, k, b, h, i, logits, nearest);
        // A learned sink is one more logit, unmasked, with a zero value vector; relative to the
        // row's nearest distance as the logits are.
        const double sink =
            g.has_sinks()
                ? double(g.sink_logits[std::size_t(h)]) + double(g.slope(b, h)) * double(nearest)
                : minus_inf;
        const double max = std::isnan(keys_max) || keys_max > sink ? keys_max : sink;
        double sum = g.has_sinks() && !std::isnan(max) ? std::exp(sink - max) : 0.0;
        std::fill(row.begin(), row.end(), 0.0);
        if (keys_max != minus_inf) {
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
        // The max with the nearest distance put back; when the sink is the max, the sink itself
        // (sink + m nearest - m nearest would lose it at far positions).
        const double true_max = g.has_sinks() && max == sink
                                    ? double(g.sink_logits[std::size_t(h)])
                                    : max - double(g.slope(b, h)) * double(nearest);
        if (lse != nullptr)
          lse[(b * g.heads_q + h) * g.seq_q + i] =
              static_cast<float>(sum == 0 ? minus_inf : true_max + std::log(sum));
      }
}

/// Same contract and signature as alibi::attention_backward, materialised in double: the
/// softmax is recomputed from q and k (lse and out are checked but not used), then
/// dP = dout vᵀ, dS = P (dP - D) with D = rowsum(P dP) (= rowsum(dout out) for the exact out),
/// dq = scale dS k, dk = scale dSᵀ q, dv = Pᵀ dout, and dslopes[h] = sum over allowed (p, t) of
/// dS (-|p - t|), summed from each row's nearest distance so that it stays exact however far;
/// with sinks, dsink_logits[h] = -sum over rows of P_sink D.
template <class T>
void attention_backward(TensorView<const detail::nondeduced<T>> q,
                        TensorView<const detail::nondeduced<T>> k,
                        TensorView<const detail::nondeduced<T>> v,
                        TensorView<const detail::nondeduced<T>> out,
                        TensorView<const detail::nondeduced<T>> dout, const float* lse,
                        TensorView<T> dq, TensorView<T> dk, TensorView<T> dv,
                        const Params& params = {}, float* dslopes = nullptr,
                        float* dsink_logits = nullptr) {
  const char* fn = "alibi::reference::attention_backward";
  const detail::Geometry g =
      detail::validate_backward(fn, q, k, v, out, dout, lse, dq, dk, dv, params);
  const double minus_inf = -std::numeric_limits<double>::infinity();
  std::vector<double> gq(std::size_t(g.batch * g.seq_q * g.heads_q * g.head_dim), 0.0);
  std::vector<double> gk(std::size_t(g.batch * g.seq_k * g.heads_kv * g.head_dim), 0.0);
  std::vector<double> gv(std::size_t(g.batch * g.seq_k * g.heads_kv * g.value_dim), 0.0);
  std::vector<double> gm(g.slopes.size(), 0.0), gs(g.sink_logits.size(), 0.0);
  std::vector<double> logits(std::size_t(g.seq_k)), logits_grad(std::size_t(g.seq_k));
  for (index_t b = 0; b < g.batch; ++b)
    for (index_t h = 0; h < g.heads_q; ++h) {
      const index_t hk = g.kv_head(h);
      const std::size_t slope_index = g.slope_index(b, h);
      for (index_t i = 0; i < g.seq_q; ++i) {
        const index_t p = g.query_position(b, i);
        index_t nearest = 0;
        const double keys_max = detail::reference_logits(g, q, k, b, h, i, logits, nearest);
        if (keys_max == minus_inf) continue;  // no allowed key: no gradient (out = 0)
        const double sink =
            g.has_sinks()
                ? double(g.sink_logits[std::size_t(h)]) + double(g.slope(b, h)) * double(nearest)
                : minus_inf;
        const double max = std::isnan(keys_max) || keys_max > sink ? keys_max : sink;
        double sum = g.has_sinks() ? std::exp(sink - max) : 0.0;
        for (index_t t = 0; t < g.seq_k; ++t)
          if (logits[t] != minus_inf) sum += std::exp(logits[t] - max);
        // dP and D = sum P dP, which is rowsum(dout out) for the exact out (the out passed in is
        // checked, not used).
        std::vector<double>& dprobs = logits_grad;
        double row_dot = 0;
        for (index_t t = 0; t < g.seq_k; ++t) {
          dprobs[std::size_t(t)] = 0;
          if (logits[t] == minus_inf) continue;
          double dprob = 0;
          for (index_t d = 0; d < g.value_dim; ++d)
            dprob += double(dout(b, i, h, d)) * double(v(b, t, hk, d));
          dprobs[std::size_t(t)] = dprob;
          row_dot += std::exp(logits[t] - max) / sum * dprob;
        }
        for (index_t t = 0; t < g.seq_k; ++t) {
          if (logits[t] == minus_inf) continue;
          const double prob = std::exp(logits[t] - max) / sum;
          const double ds = prob * (dprobs[std::size_t(t)] - row_dot);
          for (index_t d = 0; d < g.head_dim; ++d) {
            gq[std::size_t(((b * g.seq_q + i) * g.heads_q + h) * g.head_dim + d)] +=
                double(g.scale) * ds * double(k(b, t, hk, d));
            gk[std::size_t(((b * g.seq_k + t) * g.heads_kv + hk) * g.head_dim + d)] +=
                double(g.scale) * ds * double(q(b, i, h, d));
          }
          for (index_t d = 0; d < g.value_dim; ++d)
            gv[std::size_t(((b * g.seq_k + t) * g.heads_kv + hk) * g.value_dim + d)] +=
                prob * double(dout(b, i, h, d));
          // sum dS (-|p - t|) = sum dS (-(|p - t| - nearest)), as the dS sum to 0: measured from
          // the nearest key, far distances (1e12) keep their digits.
          const index_t key = g.key_position(t);
          gm[slope_index] -= ds * double((p > key ? p - key : key - p) - nearest);
        }
        if (g.has_sinks()) {
          const double sink_probability = std::exp(sink - max) / sum;
          // The sink's value is zero: dL/ds = P_sink (0 - D). With a sink the dS of the keys sum
          // to D P_sink, not 0: the part of dslopes the nearest distance carries.
          gs[std::size_t(h)] -= sink_probability * row_dot;
          gm[slope_index] -= double(nearest) * row_dot * sink_probability;
        }
      }
    }
  for (index_t b = 0; b < g.batch; ++b) {
    for (index_t i = 0; i < g.seq_q; ++i)
      for (index_t h = 0; h < g.heads_q; ++h)
        for (index_t d = 0; d < g.head_dim; ++d)
          dq(b, i, h, d) = T(gq[std::size_t(((b * g.seq_q + i) * g.heads_q + h) * g.head_dim + d)]);
    for (index_t t = 0; t < g.seq_k; ++t)
      for (index_t h = 0; h < g.heads_kv; ++h) {
        for (index_t d = 0; d < g.head_dim; ++d)
          dk(b, t, h, d) =
              T(gk[std::size_t(((b * g.seq_k + t) * g.heads_kv + h) * g.head_dim + d)]);
        for (index_t d = 0; d < g.value_dim; ++d)
          dv(b, t, h, d) =
              T(gv[std::size_t(((b * g.seq_k + t) * g.heads_kv + h) * g.value_dim + d)]);
      }
  }
  if (dslopes != nullptr)
    for (std::size_t j = 0; j < gm.size(); ++j) dslopes[j] = float(gm[j]);
  if (dsink_logits != nullptr)
    for (std::size_t j = 0; j < gs.size(); ++j) dsink_logits[j] = float(gs[j]);
}

}  // namespace reference
}  // namespace alibi
