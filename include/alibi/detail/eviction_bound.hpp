#pragma once
// The certificate of a memory-budgeted cache: how much weight the keys it evicted could have
// carried in a query row that no longer sees them.
//
// A key t at distance |p - t| from a query row with scaled query norm |q| and slope m has logit
// <= |q| |k_t| - m |p - t| (Cauchy-Schwarz). Evicted keys with norms at most K, at n consecutive
// positions whose distances from p are d, d + 1, ..., d + n - 1, carry together at most
//     E <= exp(|q| K) sum_{j < n} exp(-m (d + j)) = exp(|q| K - m d) (1 - e^(-m n)) / (1 - e^(-m))
// (n for m = 0). Relative to the row's sum S = exp(lse) over what it did attend, attending the
// full history instead would give out_full - out = E / (S + E) (out_evicted - out), so the output
// moves by at most 2 (E / S) max |v|: the bound returned here is the bound on E / S.

#include <algorithm>
#include <cmath>
#include <limits>

#include "../tensor_view.hpp"

namespace alibi {
namespace detail {

/// The keys a (sequence, kv head) has evicted: positions [begin, end) (begin is past the sink
/// tokens it keeps), the largest of their norms. Empty: nothing evicted.
struct EvictedKeys {
  index_t begin = 0, end = 0;
  double max_norm = 0;
  bool empty() const { return end <= begin; }
};

/// log of sum_{j < n} exp(-m (d + j)), for n >= 1: in log space so that neither a steep slope
/// nor a negative one overflows before the caller's exponent is added.
inline double log_geometric_sum(double slope, double distance, double count) {
  double log_ratio;  // log((1 - e^(-m n)) / (1 - e^(-m)))
  if (slope == 0) {
    log_ratio = std::log(count);
  } else if (slope > 0) {
    log_ratio = std::log(-std::expm1(-slope * count)) - std::log(-std::expm1(-slope));
  } else {  // farther keys weigh more: the sum is led by its farthest term
    log_ratio =
        -slope * (count - 1) + std::log(-std::expm1(slope * count)) - std::log(-std::expm1(slope));
  }
  return -slope * distance + log_ratio;
}

/// Upper bound of (sum over the evicted keys the row may attend of exp(logit)) / exp(lse), for a
/// query row at `position` with scaled query norm `query_norm` and slope `slope` that may attend
/// key positions [allowed_begin, allowed_end) and whose sum over what it did attend is exp(lse)
/// (the lse may carry float rounding: 2^-22 |lse| is allowed for). 0 when no evicted key is
/// allowed; +inf when the row attended nothing (lse -inf) or a norm is not finite; NaN in, NaN
/// (a NaN norm or lse) gives +inf, so that a limit on the bound always trips.
inline double evicted_weight(double query_norm, double slope, index_t position,
                             index_t allowed_begin, index_t allowed_end, const EvictedKeys& evicted,
                             double lse) {
  const index_t lo = std::max(evicted.begin, allowed_begin);
  const index_t hi = std::min(evicted.end, allowed_end);
  if (hi <= lo) return 0.0;
  if (!(lse > -std::numeric_limits<double>::infinity())) return HUGE_VAL;
  // Norms carry float round-off: a relative margin keeps the bound an upper bound.
  const double base =
      query_norm * evicted.max_norm * (1 + 1e-5) - lse + std::ldexp(std::fabs(lse), -22);
  double total = 0;
  // Keys at or before the query: distances p - (hi - 1) up to p - lo.
  if (lo <= position) {
    const index_t last = std::min(hi - 1, position);
    total +=
        std::exp(base + log_geometric_sum(slope, double(position - last), double(last - lo + 1)));
  }
  // Keys after it (bidirectional): distances from max(lo, p + 1) - p.
  if (hi - 1 > position) {
    const index_t first = std::max(lo, position + 1);
    total +=
        std::exp(base + log_geometric_sum(slope, double(first - position), double(hi - first)));
  }
  return std::isnan(total) ? HUGE_VAL : total;
}

}  // namespace detail
}  // namespace alibi
