#pragma once
// Learned attention sinks (Params::sink_logits): one more logit per row with a zero value vector.
// The kernels never see it; it is folded into each row's finished lse and output, in double.

#include <algorithm>
#include <cmath>
#include <limits>

namespace alibi {
namespace detail {

/// A row's result with the sink joined: its lse, and the factor its output over the keys is
/// multiplied by, exp(lse_keys - lse) = 1 / (1 + exp(sink - lse_keys)).
struct SinkFold {
  double lse;
  double factor;
};

/// `lse_keys`: the row's lse over its keys (-inf when it has none, NaN stays NaN).
inline SinkFold fold_sink(double lse_keys, double sink) {
  if (lse_keys == -std::numeric_limits<double>::infinity()) return {sink, 0.0};
  // log(e^a + e^b) = hi + log1p(e^(lo - hi)): no overflow however large either is.
  const double hi = std::max(lse_keys, sink), lo = std::min(lse_keys, sink);
  const double lse = std::isnan(lse_keys) ? lse_keys : hi + std::log1p(std::exp(lo - hi));
  return {lse, std::exp(lse_keys - lse)};
}

}  // namespace detail
}  // namespace alibi
