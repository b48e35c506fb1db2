// Gradients: alibi::attention_backward and alibi::reference::attention_backward against central
// finite differences of a scalar loss in double on every semantic class, and the fused against
// the reference in float on random shapes.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <cstring>

#include <alibi/detail/kernel_traits.hpp>

using namespace alibi_test;

namespace {

/// L = sum(out * weight): its gradient with respect to out is `weight`, the dout of the backward.
double loss(const Shape& s, const std::vector<double>& q, const std::vector<double>& k,
            const std::vector<double>& v, const alibi::Params& p,
            const std::vector<double>& weight) {
  std::vector<double> out(s.out_size());
  alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                              out_view(s, out.data()), p);
  double l = 0;
  for (std::size_t i = 0; i < out.size(); ++i) l += out[i] * weight[i];
  return l;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double r = 0;
  for (std::size_t i = 0; i < a.size(); ++i) r += a[i] * b[i];
  return r;
}

/// The directional derivative of the loss along `direction` (applied to `x`), centrally.
template <class Apply>
double directional(const std::vector<double>& direction, std::vector<double>& x, Apply&& apply) {
  const double eps = 1e-5;
  const std::vector<double> saved = x;
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = saved[i] + eps * direction[i];
  const double plus = apply();
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = saved[i] - eps * direction[i];
  const double minus = apply();
  x = saved;
  return (plus - minus) / (2 * eps);
}

struct Gradients {
  std::vector<double> dq, dk, dv;
  std::vector<float> dslopes;
};

template <bool fused>
Gradients backward(const Shape& s, const std::vector<double>& q, const std::vector<double>& k,
                   const std::vector<double>& v, const alibi::Params& p,
                   const std::vector<double>& dout, std::size_t slope_count) {
  std::vector<double> out(s.out_size());
  std::vector<float> lse(s.lse_size());
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), p, lse.data());
  Gradients g{std::vector<double>(q.size()), std::vector<double>(k.size()),
              std::vector<double>(v.size()), std::vector<float>(slope_count)};
  const auto qv = q_view(s, q.data()), kv = k_view(s, k.data()), vv = v_view(s, v.data());
  const alibi::TensorView<const double> ov = out_view(s, out.data()), dv = out_view(s, dout.data());
  if (fused)
    alibi::attention_backward(qv, kv, vv, ov, dv, lse.data(), q_view(s, g.dq.data()),
                              k_view(s, g.dk.data()), v_view(s, g.dv.data()), p, g.dslopes.data());
  else
    alibi::reference::attention_backward(qv, kv, vv, ov, dv, lse.data(), q_view(s, g.dq.data()),
                                         k_view(s, g.dk.data()), v_view(s, g.dv.data()), p,
                                         g.dslopes.data());
  return g;
}

template <bool fused>
void check_against_finite_differences(std::uint32_t seed) {
  for (const Case& c : semantic_cases()) {
    INFO(c.name << (fused ? " (fused)" : " (reference)"));
    const Shape& s = c.shape;
    auto q = random_values<double>(s.q_size(), seed++, 1.5f);
    auto k = random_values<double>(s.k_size(), seed++, 1.5f);
    auto v = random_values<double>(s.v_size(), seed++);
    const auto weight = random_values<double>(s.out_size(), seed++);
    alibi::Params p = c.params;
    // Explicit slopes so that they can be perturbed; scale explicit for the same reason.
    if (p.slopes.empty()) p.slopes = alibi::slopes(int(s.heads_q));
    std::vector<double> slopes(p.slopes.begin(), p.slopes.end());
    const Gradients g = backward<fused>(s, q, k, v, p, weight, slopes.size());
    const auto l = [&] { return loss(s, q, k, v, p, weight); };
    const auto rq = random_values<double>(q.size(), seed++),
               rk = random_values<double>(k.size(), seed++),
               rv = random_values<double>(v.size(), seed++);
    const double fq = directional(rq, q, l), fk = directional(rk, k, l), fv = directional(rv, v, l);
    CHECK(dot(g.dq, rq) == Approx(fq).epsilon(1e-6).margin(1e-9));
    CHECK(dot(g.dk, rk) == Approx(fk).epsilon(1e-6).margin(1e-9));
    CHECK(dot(g.dv, rv) == Approx(fv).epsilon(1e-6).margin(1e-9));
    // Slopes are float: perturb them one at a time by float-exact steps h and h/2 and take
    // Richardson's combination of the two central differences, accurate to O(h^4) (the loss
    // curves sharply in m: distances reach 150, so h times 150 must stay small).
    for (std::size_t j = 0; j < slopes.size(); ++j) {
      const auto central = [&](float h) {
        alibi::Params plus = p, minus = p;
        plus.slopes[j] += h;
        minus.slopes[j] -= h;
        return (loss(s, q, k, v, plus, weight) - loss(s, q, k, v, minus, weight)) /
               double(plus.slopes[j] - minus.slopes[j]);
      };
      const double fd = (4 * central(1.0f / 16384) - central(1.0f / 8192)) / 3;
      CHECK(double(g.dslopes[j]) == Approx(fd).epsilon(1e-6).margin(1e-8));
    }
  }
}

}  // namespace

TEST_CASE("reference backward matches finite differences on every semantic class", "[backward]") {
  check_against_finite_differences<false>(2000);
}

TEST_CASE("fused backward matches finite differences on every semantic class", "[backward]") {
  check_against_finite_differences<true>(3000);
}

TEST_CASE("fused backward matches the reference in float on random shapes", "[backward]") {
  constexpr index_t QR = alibi::detail::kernel_traits<float>::query_rows;
  constexpr index_t KB = alibi::detail::kernel_traits<float>::key_block;
  const std::vector<index_t> lengths{1, 7, QR - 1, QR, QR + 1, KB - 1, KB + 1};
  const std::vector<index_t> dims{1, 5, 16, 64, 100};
  const std::vector<std::pair<index_t, index_t>> heads{{1, 1}, {4, 2}, {3, 3}, {6, 1}};
  std::mt19937 rng(77);
  const auto pick = [&](const auto& list) { return list[rng() % list.size()]; };
  for (int iteration = 0; iteration < 16; ++iteration) {
    Shape s;
    s.batch = 1 + index_t(rng() % 2);
    s.seq_k = pick(lengths);
    s.seq_q = rng() % 3 == 0 ? 1 + index_t(rng() % s.seq_k) : s.seq_k;
    std::tie(s.heads_q, s.heads_kv) = pick(heads);
    s.head_dim = pick(dims);
    s.value_dim = rng() % 3 == 0 ? pick(dims) : s.head_dim;
    alibi::Params p;
    p.causal = rng() % 3 != 0;
    if (rng() % 3 == 0) p.window_left = index_t(rng() % 60);
    INFO("iteration " << iteration << ": B " << s.batch << ", Sq " << s.seq_q << ", Sk " << s.seq_k
                      << ", Hq " << s.heads_q << ", Hkv " << s.heads_kv << ", D " << s.head_dim
                      << ", Dv " << s.value_dim << ", causal " << p.causal);
    const auto q = random_values<float>(s.q_size(), 900 + iteration);
    const auto k = random_values<float>(s.k_size(), 950 + iteration);
    const auto v = random_values<float>(s.v_size(), 990 + iteration);
    const auto dout = random_values<float>(s.out_size(), 1030 + iteration);
    std::vector<float> out(s.out_size()), lse(s.lse_size());
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, out.data()), p, lse.data());
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size()), rq(q.size()), rk(k.size()),
        rv(v.size()), dm(std::size_t(s.heads_q)), rm(dm.size());
    const alibi::TensorView<const float> qv = q_view(s, q.data()), kv = k_view(s, k.data()),
                                         vv = v_view(s, v.data()), ov = out_view(s, out.data()),
                                         gv = out_view(s, dout.data());
    alibi::attention_backward(qv, kv, vv, ov, gv, lse.data(), q_view(s, dq.data()),
                              k_view(s, dk.data()), v_view(s, dv.data()), p, dm.data());
    alibi::reference::attention_backward(qv, kv, vv, ov, gv, lse.data(), q_view(s, rq.data()),
                                         k_view(s, rk.data()), v_view(s, rv.data()), p, rm.data());
    // Float accumulation over a few hundred keys and rows of O(1) terms.
    for (std::size_t i = 0; i < dq.size(); ++i) REQUIRE(dq[i] == Approx(rq[i]).margin(2e-5));
    for (std::size_t i = 0; i < dk.size(); ++i) REQUIRE(dk[i] == Approx(rk[i]).margin(2e-5));
    for (std::size_t i = 0; i < dv.size(); ++i) REQUIRE(dv[i] == Approx(rv[i]).margin(2e-5));
    for (std::size_t i = 0; i < dm.size(); ++i)
      REQUIRE(dm[i] == Approx(rm[i]).epsilon(1e-4).margin(1e-3));
  }
}

TEST_CASE("backward is bitwise identical for any thread count", "[backward][threads]") {
  const Shape s{2, 300, 300, 4, 2, 16, 16};
  const auto q = random_values<float>(s.q_size(), 1), k = random_values<float>(s.k_size(), 2),
             v = random_values<float>(s.v_size(), 3), dout = random_values<float>(s.out_size(), 4);
  std::vector<float> out(s.out_size()), lse(s.lse_size());
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), alibi::Params{}, lse.data());
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2, 3, 0}) {
    alibi::Params p;
    p.num_threads = threads;
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size()), dm(4);
    alibi::attention_backward(alibi::TensorView<const float>(q_view(s, q.data())),
                              k_view(s, k.data()), v_view(s, v.data()), out_view(s, out.data()),
                              out_view(s, dout.data()), lse.data(), q_view(s, dq.data()),
                              k_view(s, dk.data()), v_view(s, dv.data()), p, dm.data());
    dq.insert(dq.end(), dk.begin(), dk.end());
    dq.insert(dq.end(), dv.begin(), dv.end());
    dq.insert(dq.end(), dm.begin(), dm.end());
    results.push_back(dq);
  }
  for (std::size_t i = 1; i < results.size(); ++i)
    CHECK(std::memcmp(results[i].data(), results[0].data(), results[0].size() * sizeof(float)) ==
          0);
}

TEST_CASE("backward is bitwise identical whether each (batch, kv head) is one task or many",
          "[backward][threads]") {
  // One (batch, kv head): one thread makes both passes in one task, more split them into key
  // tiles and query blocks. Windows, bidirectional rows and lengths off the tiles included.
  const Shape s{1, 333, 700, 4, 1, 24, 40};
  const auto q = random_values<float>(s.q_size(), 5), k = random_values<float>(s.k_size(), 6),
             v = random_values<float>(s.v_size(), 7), dout = random_values<float>(s.out_size(), 8);
  for (int variant = 0; variant < 3; ++variant) {
    INFO("variant " << variant);
    alibi::Params p;
    if (variant == 1) {
      p.window_left = 300;
      p.window_right = 20;
    }
    if (variant == 2) p.causal = false;
    std::vector<float> out(s.out_size()), lse(s.lse_size());
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, out.data()), p, lse.data());
    std::vector<std::vector<float>> results;
    for (int threads : {1, 2}) {
      p.num_threads = threads;
      std::vector<float> dq(q.size()), dk(k.size()), dv(v.size()), dm(4);
      alibi::attention_backward(alibi::TensorView<const float>(q_view(s, q.data())),
                                k_view(s, k.data()), v_view(s, v.data()), out_view(s, out.data()),
                                out_view(s, dout.data()), lse.data(), q_view(s, dq.data()),
                                k_view(s, dk.data()), v_view(s, dv.data()), p, dm.data());
      dq.insert(dq.end(), dk.begin(), dk.end());
      dq.insert(dq.end(), dv.begin(), dv.end());
      dq.insert(dq.end(), dm.begin(), dm.end());
      results.push_back(dq);
    }
    CHECK(std::memcmp(results[1].data(), results[0].data(), results[0].size() * sizeof(float)) ==
          0);
  }
}

TEST_CASE("backward rejects bad arguments before writing", "[backward][validation]") {
  const Shape s{1, 4, 4, 2, 2, 8, 8};
  std::vector<float> x(s.q_size(), 1.0f), lse(s.lse_size(), 0.0f), dq(s.q_size(), 7.0f),
      dk(s.k_size(), 7.0f), dv(s.v_size(), 7.0f);
  const alibi::TensorView<const float> c = q_view(s, x.data());
  const Shape wide{1, 4, 4, 2, 2, 8, 9};
  std::vector<float> w(wide.out_size());
  CHECK_THROWS_WITH(
      alibi::attention_backward(
          c, c, c, c, alibi::TensorView<const float>(out_view(wide, w.data())), lse.data(),
          q_view(s, dq.data()), k_view(s, dk.data()), v_view(s, dv.data())),
      Catch::Contains("dout has shape [1, 4, 2, 9]"));
  CHECK_THROWS_WITH(alibi::attention_backward(c, c, c, c, c, nullptr, q_view(s, dq.data()),
                                              k_view(s, dk.data()), v_view(s, dv.data())),
                    Catch::Contains("lse is null"));
  CHECK_THROWS_WITH(alibi::attention_backward(c, c, c, c, c, lse.data(), q_view(s, dq.data()),
                                              k_view(s, dq.data()), v_view(s, dv.data())),
                    Catch::Contains("dq overlaps dk"));
  CHECK_THROWS_WITH(alibi::attention_backward(c, c, c, c, c, lse.data(), q_view(s, x.data()),
                                              k_view(s, dk.data()), v_view(s, dv.data())),
                    Catch::Contains("dq overlaps q"));
  for (float e : dq) CHECK(e == 7.0f);
  for (float e : dk) CHECK(e == 7.0f);
}

TEST_CASE("backward never reads keys past seqlens_k, NaN there included", "[backward]") {
  const Shape s{1, 40, 40, 1, 1, 8, 8};
  auto q = random_values<float>(s.q_size(), 181), k = random_values<float>(s.k_size(), 182),
       v = random_values<float>(s.v_size(), 183);
  const auto dout = random_values<float>(s.out_size(), 184);
  for (std::size_t i = 30 * 8; i < k.size(); ++i) k[i] = v[i] = std::nanf("");
  alibi::Params p;
  p.seqlens_k = {30};
  std::vector<float> out(s.out_size()), lse(s.lse_size());
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), p, lse.data());
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size()), rq(q.size()), rk(k.size()),
      rv(v.size());
  const alibi::TensorView<const float> qv = q_view(s, q.data()), kv = k_view(s, k.data()),
                                       vv = v_view(s, v.data()), ov = out_view(s, out.data()),
                                       gv = out_view(s, dout.data());
  alibi::attention_backward(qv, kv, vv, ov, gv, lse.data(), q_view(s, dq.data()),
                            k_view(s, dk.data()), v_view(s, dv.data()), p);
  alibi::reference::attention_backward(qv, kv, vv, ov, gv, lse.data(), q_view(s, rq.data()),
                                       k_view(s, rk.data()), v_view(s, rv.data()), p);
  for (std::size_t i = 0; i < dq.size(); ++i) REQUIRE(dq[i] == Approx(rq[i]).margin(2e-5));
  for (std::size_t i = 0; i < dk.size(); ++i) REQUIRE(dk[i] == Approx(rk[i]).margin(2e-5));
  for (std::size_t i = 0; i < dv.size(); ++i) REQUIRE(dv[i] == Approx(rv[i]).margin(2e-5));
}

TEST_CASE("backward with half and bfloat16 storage matches the reference to storage precision",
          "[backward]") {
  // Both compute from the same rounded inputs; the kernel accumulates in float and rounds each
  // gradient once to the storage type, so they agree to a few storage ulps of the gradient scale.
  const Shape s{1, 70, 70, 4, 2, 16, 16};
  const auto check = [&](auto tag, double ulp) {
    using T = decltype(tag);
    const auto q = random_values<T>(s.q_size(), 201), k = random_values<T>(s.k_size(), 202),
               v = random_values<T>(s.v_size(), 203), dout = random_values<T>(s.out_size(), 204);
    std::vector<T> out(s.out_size());
    std::vector<float> lse(s.lse_size());
    const alibi::TensorView<const T> qv = q_view(s, q.data()), kv = k_view(s, k.data()),
                                     vv = v_view(s, v.data());
    alibi::attention(qv, kv, vv, out_view(s, out.data()), alibi::Params{}, lse.data());
    std::vector<T> dq(q.size()), dk(k.size()), dv(v.size()), rq(q.size()), rk(k.size()),
        rv(v.size());
    const alibi::TensorView<const T> ov = out_view(s, out.data()), gv = out_view(s, dout.data());
    alibi::attention_backward(qv, kv, vv, ov, gv, lse.data(), q_view(s, dq.data()),
                              k_view(s, dk.data()), v_view(s, dv.data()));
    alibi::reference::attention_backward(qv, kv, vv, ov, gv, lse.data(), q_view(s, rq.data()),
                                         k_view(s, rk.data()), v_view(s, rv.data()));
    for (const auto* pair : {&dq, &dk, &dv}) {
      const std::vector<T>& got = *pair;
      const std::vector<T>& want = pair == &dq ? rq : pair == &dk ? rk : rv;
      double scale = 0;
      for (const T& x : want) scale = std::max(scale, std::fabs(double(float(x))));
      for (std::size_t i = 0; i < got.size(); ++i)
        REQUIRE(std::fabs(double(float(got[i])) - double(float(want[i]))) <= 4 * ulp * scale);
    }
  };
  check(Eigen::half(), std::ldexp(1.0, -11));
  check(Eigen::bfloat16(), std::ldexp(1.0, -8));
}
