// The certificate of a memory-budgeted cache (detail/eviction_bound.hpp) against brute force in
// float64: the weight evicted keys really carry relative to the row's sum over what it kept, and
// the output change attending them would make, on random and adversarial data.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include <alibi/detail/eviction_bound.hpp>

using namespace alibi_test;
using alibi::detail::evicted_weight;
using alibi::detail::EvictedKeys;

namespace {

double log_sum_exp(const std::vector<double>& x) {
  if (x.empty()) return -std::numeric_limits<double>::infinity();
  const double max = *std::max_element(x.begin(), x.end());
  double sum = 0;
  for (double e : x) sum += std::exp(e - max);
  return max + std::log(sum);
}

/// One query row against keys at positions 0..n-1, of which [evict_begin, evict_end) are
/// evicted; the row may attend [allowed_begin, allowed_end).
struct Row {
  index_t dim = 8, keys = 0, position = 0, evict_begin = 0, evict_end = 0;
  index_t allowed_begin = 0, allowed_end = 0;
  double slope = 0;
  std::vector<double> q, k, v;  // q scaled; k and v [keys, dim]

  double logit(index_t t) const {
    double dot = 0;
    for (index_t d = 0; d < dim; ++d) dot += q[std::size_t(d)] * k[std::size_t(t * dim + d)];
    return dot - slope * double(std::llabs(position - t));
  }
  bool allowed(index_t t) const { return allowed_begin <= t && t < allowed_end; }
  bool evicted(index_t t) const { return evict_begin <= t && t < evict_end; }
  double norm(const double* x) const {
    double s = 0;
    for (index_t d = 0; d < dim; ++d) s += x[d] * x[d];
    return std::sqrt(s);
  }
  double query_norm() const { return norm(q.data()); }
  EvictedKeys evicted_keys() const {
    EvictedKeys e{evict_begin, evict_end, 0.0};
    for (index_t t = evict_begin; t < evict_end; ++t)
      e.max_norm = std::max(e.max_norm, norm(&k[std::size_t(t * dim)]));
    return e;
  }
  /// log of the row's sum over the keys it kept, and log of the evicted keys' true weight.
  double kept_lse() const {
    std::vector<double> l;
    for (index_t t = 0; t < keys; ++t)
      if (allowed(t) && !evicted(t)) l.push_back(logit(t));
    return log_sum_exp(l);
  }
  double evicted_lse() const {
    std::vector<double> l;
    for (index_t t = 0; t < keys; ++t)
      if (allowed(t) && evicted(t)) l.push_back(logit(t));
    return log_sum_exp(l);
  }
  /// max over d of |out_full - out_kept|, and max |v|.
  std::pair<double, double> output_change() const {
    std::vector<double> all, kept;
    for (index_t t = 0; t < keys; ++t)
      if (allowed(t)) {
        all.push_back(logit(t));
        if (!evicted(t)) kept.push_back(logit(t));
      }
    const double lse_all = log_sum_exp(all), lse_kept = log_sum_exp(kept);
    double change = 0, vmax = 0;
    for (index_t d = 0; d < dim; ++d) {
      double full = 0, part = 0;
      for (index_t t = 0; t < keys; ++t) {
        if (!allowed(t)) continue;
        const double x = v[std::size_t(t * dim + d)];
        vmax = std::max(vmax, std::fabs(x));
        full += std::exp(logit(t) - lse_all) * x;
        if (!evicted(t)) part += std::exp(logit(t) - lse_kept) * x;
      }
      change = std::max(change, std::fabs(full - part));
    }
    return {change, vmax};
  }
  double bound() const {
    return evicted_weight(query_norm(), slope, position, allowed_begin, allowed_end, evicted_keys(),
                          kept_lse());
  }
};

}  // namespace

TEST_CASE("eviction bound: an upper bound of the evicted weight on random rows", "[budget]") {
  std::mt19937 rng(4242);
  std::uniform_real_distribution<double> unit(-1.0, 1.0), uniform01(0.0, 1.0);
  const std::vector<float> schedule = alibi::slopes(32);
  int bounded = 0, meaningful = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    Row r;
    r.dim = index_t(1 + rng() % 64);
    r.keys = index_t(2 + rng() % 400);
    r.evict_end = index_t(1 + rng() % (r.keys - 1));
    r.evict_begin = rng() % 3 == 0 ? index_t(rng() % r.evict_end) : 0;  // sinks kept
    // Mostly decode-like (query at the newest key), sometimes anywhere (bidirectional windows).
    r.position = rng() % 4 == 0 ? index_t(rng() % r.keys) : r.keys - 1;
    r.allowed_begin = rng() % 3 == 0 ? std::max<index_t>(0, r.position - index_t(rng() % 300)) : 0;
    r.allowed_end = rng() % 4 == 0 ? r.keys : r.position + 1;
    const int kind = int(rng() % 4);
    r.slope = kind == 0 ? 0.0 : kind == 1 ? double(schedule[rng() % 32]) : uniform01(rng) * 1e-3;
    const double q_scale = 0.1 + 3 * uniform01(rng), k_scale = 0.1 + 3 * uniform01(rng);
    r.q.resize(std::size_t(r.dim));
    for (double& x : r.q) x = q_scale * unit(rng) / std::sqrt(double(r.dim));
    r.k.resize(std::size_t(r.keys * r.dim));
    r.v.resize(r.k.size());
    for (double& x : r.k) x = k_scale * unit(rng);
    for (double& x : r.v) x = unit(rng);
    INFO("trial " << trial << ": keys " << r.keys << ", evicted [" << r.evict_begin << ", "
                  << r.evict_end << "), p " << r.position << ", allowed [" << r.allowed_begin
                  << ", " << r.allowed_end << "), slope " << r.slope);
    const double bound = r.bound();
    const double kept = r.kept_lse(), evicted = r.evicted_lse();
    if (std::isinf(evicted) && evicted < 0) {
      REQUIRE(bound == 0.0);  // no evicted key is allowed
      continue;
    }
    if (std::isinf(kept)) {
      REQUIRE(bound == HUGE_VAL);  // the row kept nothing: no relative bound exists
      continue;
    }
    REQUIRE(std::log(bound) >= evicted - kept - 1e-12);
    const auto [change, vmax] = r.output_change();
    REQUIRE(change <= 2 * bound * vmax * (1 + 1e-9) + 1e-15);
    ++bounded;
    if (bound < 0.5) ++meaningful;
  }
  // The draws reach both regimes: bounds that certify and bounds that are merely true.
  CHECK(bounded > 1500);
  CHECK(meaningful > 300);
}

TEST_CASE("eviction bound: tight when every evicted key is aligned with the query at full norm",
          "[budget]") {
  // The adversary of Cauchy-Schwarz: each evicted key is K q / |q|, so q.k = |q| K exactly and
  // the evicted weight is the bound's geometric sum, term by term.
  for (double slope : {0.0, 1e-4, 1.0 / 256, 0.0625, 0.5, 1.0}) {
    for (index_t evicted : {1, 7, 300}) {
      for (index_t gap : {1, 50, 2000}) {  // keys kept between the evicted ones and the query
        INFO("slope " << slope << ", evicted " << evicted << ", kept " << gap);
        Row r;
        r.dim = 16;
        r.evict_begin = 0;
        r.evict_end = evicted;
        r.keys = evicted + gap;
        r.position = r.keys - 1;
        r.allowed_begin = 0;
        r.allowed_end = r.keys;
        r.slope = slope;
        r.q = random_values<double>(std::size_t(r.dim), 91, 1.0f);
        const double qn = r.query_norm(), K = 4.0;
        r.k = random_values<double>(std::size_t(r.keys * r.dim), 92, 0.2f);
        r.v = random_values<double>(r.k.size(), 93);
        for (index_t t = 0; t < evicted; ++t)
          for (index_t d = 0; d < r.dim; ++d)
            r.k[std::size_t(t * r.dim + d)] = K * r.q[std::size_t(d)] / qn;
        const double truth = std::exp(r.evicted_lse() - r.kept_lse());
        const double bound = r.bound();
        REQUIRE(bound >= truth);
        // Only the float margins (1e-5 of |q| K, 2^-22 of |lse|) separate them.
        REQUIRE(bound <= truth * 1.001);
      }
    }
  }
}

TEST_CASE("eviction bound: a far evicted key aligned with a later query, shallow slope",
          "[budget]") {
  // One huge key long ago, perfectly aligned with the newest query: the bound must see it
  // (through the evicted max norm), however far away and however shallow the slope.
  Row r;
  r.dim = 64;
  r.keys = 5000;
  r.evict_begin = 0;
  r.evict_end = 4000;
  r.position = r.keys - 1;
  r.allowed_begin = 0;
  r.allowed_end = r.keys;
  r.slope = 1.0 / 65536;
  r.q = random_values<double>(std::size_t(r.dim), 101, 0.5f);
  r.k = random_values<double>(std::size_t(r.keys * r.dim), 102, 0.5f);
  r.v = random_values<double>(r.k.size(), 103);
  const double qn = r.query_norm();
  for (index_t d = 0; d < r.dim; ++d)
    r.k[std::size_t(17 * r.dim + d)] = 30 * r.q[std::size_t(d)] / qn;
  const double truth = std::exp(r.evicted_lse() - r.kept_lse());
  REQUIRE(truth > 1);  // that key would dominate the row
  REQUIRE(r.bound() >= truth);
  const auto [change, vmax] = r.output_change();
  REQUIRE(change <= 2 * r.bound() * vmax);
}

TEST_CASE("eviction bound: edge cases", "[budget]") {
  const EvictedKeys evicted{10, 20, 2.0};
  // Nothing evicted, or nothing evicted the row may attend: exactly 0.
  REQUIRE(evicted_weight(1.0, 0.5, 100, 0, 101, EvictedKeys{}, 0.0) == 0.0);
  REQUIRE(evicted_weight(1.0, 0.5, 100, 20, 101, evicted, 0.0) == 0.0);
  REQUIRE(evicted_weight(1.0, 0.5, 100, 0, 10, evicted, 0.0) == 0.0);
  // The row kept nothing, or a norm is NaN: +inf, so that any limit trips.
  REQUIRE(evicted_weight(1.0, 0.5, 100, 0, 101, evicted, -HUGE_VAL) == HUGE_VAL);
  REQUIRE(evicted_weight(std::nan(""), 0.5, 100, 0, 101, evicted, 0.0) == HUGE_VAL);
  REQUIRE(evicted_weight(1.0, 0.5, 100, 0, 101, EvictedKeys{10, 20, std::nan("")}, 0.0) ==
          HUGE_VAL);
  REQUIRE(evicted_weight(1.0, 0.5, 100, 0, 101, evicted, std::nan("")) == HUGE_VAL);
  // Closed forms: slope 0 counts the keys; slope m sums e^(-m d) from the nearest distance 81.
  REQUIRE(evicted_weight(1.0, 0.0, 100, 0, 101, evicted, 0.0) ==
          Approx(10 * std::exp(2.0)).epsilon(1e-4));
  double sum = 0;
  for (int d = 81; d <= 90; ++d) sum += std::exp(2.0 - 0.5 * d);
  REQUIRE(evicted_weight(1.0, 0.5, 100, 0, 101, evicted, 0.0) == Approx(sum).epsilon(1e-4));
  // A window that cuts the evicted range: only positions 15..19 count.
  sum = 0;
  for (int d = 81; d <= 85; ++d) sum += std::exp(2.0 - 0.5 * d);
  REQUIRE(evicted_weight(1.0, 0.5, 100, 15, 101, evicted, 0.0) == Approx(sum).epsilon(1e-4));
  // A negative slope (farther keys weigh more) and keys after the query (bidirectional).
  sum = 0;
  for (int d = 81; d <= 90; ++d) sum += std::exp(2.0 + 0.01 * d);
  REQUIRE(evicted_weight(1.0, -0.01, 100, 0, 101, evicted, 0.0) == Approx(sum).epsilon(1e-4));
  sum = 0;
  for (int t = 10; t < 20; ++t) sum += std::exp(2.0 - 0.5 * std::abs(t - 12));
  REQUIRE(evicted_weight(1.0, 0.5, 12, 0, 101, evicted, 0.0) == Approx(sum).epsilon(1e-4));
  // Steep slopes and long distances underflow to 0, never NaN.
  REQUIRE(evicted_weight(1.0, 8.0, 1 << 30, 0, (1 << 30) + 1, evicted, 0.0) == 0.0);
}
