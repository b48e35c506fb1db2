// The reference against the oracle written in the test: both in double, so they agree to
// round-off on every semantic class.
#include "test_support.hpp"

#include <catch2/catch.hpp>

using namespace alibi_test;

TEST_CASE("reference matches the float64 oracle on every semantic class", "[reference]") {
  std::uint32_t seed = 1;
  for (const Case& c : semantic_cases()) {
    INFO(c.name);
    const Shape& s = c.shape;
    auto q = random_values<double>(s.q_size(), seed++, 2.0f);
    auto k = random_values<double>(s.k_size(), seed++, 2.0f);
    auto v = random_values<double>(s.v_size(), seed++);
    std::vector<double> out(s.out_size(), -7.0);
    std::vector<float> lse(s.lse_size(), -7.0f);
    alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                                out_view(s, out.data()), c.params, lse.data());
    const Expected e = oracle(s, q, k, v, c.params);
    for (std::size_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(e.out[i]).margin(1e-13));
    for (std::size_t i = 0; i < lse.size(); ++i) {
      if (std::isinf(e.lse[i])) {
        REQUIRE(lse[i] == -std::numeric_limits<float>::infinity());
      } else {
        // lse is returned as float: one rounding.
        REQUIRE(double(lse[i]) == Approx(e.lse[i]).epsilon(1e-7).margin(1e-7));
      }
    }
  }
}

TEST_CASE("reference: a row with no allowed key gives out = 0 and lse = -inf", "[reference]") {
  const Shape s{1, 4, 3, 1, 1, 2, 2};
  alibi::Params p;
  p.query_offset = -10;  // every query before every key
  std::vector<float> q(s.q_size(), 1.0f), k(s.k_size(), 1.0f), v(s.v_size(), 1.0f),
      out(s.out_size(), 5.0f), lse(s.lse_size(), 5.0f);
  alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                              out_view(s, out.data()), p, lse.data());
  for (float x : out) CHECK(x == 0.0f);
  for (float x : lse) CHECK(x == -std::numeric_limits<float>::infinity());
}

TEST_CASE("reference: a closed form with zero keys", "[reference]") {
  // k = 0 leaves only the bias: a causal row at distance 0..n-1 has weights r^d with r = e^-m, so
  // lse = log((1 - r^n) / (1 - r)) and, with v_t = distance, out = sum d r^d / sum r^d.
  const index_t n = 40;
  const Shape s{1, 1, n, 1, 1, 4, 1};
  alibi::Params p;
  p.slopes = {0.25f};
  std::vector<double> q(s.q_size(), 1.0), k(s.k_size(), 0.0), v(s.v_size()), out(1);
  for (index_t t = 0; t < n; ++t) v[t] = double(n - 1 - t);
  float lse = 0;
  alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                              out_view(s, out.data()), p, &lse);
  const double r = std::exp(-0.25), rn = std::pow(r, double(n));
  const double sum = (1 - rn) / (1 - r);
  const double weighted =
      r * (1 - double(n) * std::pow(r, double(n - 1)) + double(n - 1) * rn) / ((1 - r) * (1 - r));
  CHECK(out[0] == Approx(weighted / sum).epsilon(1e-13));
  CHECK(double(lse) == Approx(std::log(sum)).epsilon(1e-7));
}
