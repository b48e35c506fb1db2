// Long sequences: the bias stays exact at distance 10^6 and at absolute positions past 2^24, and
// ALiBi's decay makes keys far enough away irrelevant to float precision however many there are.
#include "test_support.hpp"

#include <catch2/catch.hpp>

using namespace alibi_test;

namespace {

/// Decode: one query against n keys; out and lse of the fused kernel and of the reference.
struct Decode {
  std::vector<float> out, ref;
  float lse = 0, ref_lse = 0;
};

Decode decode(index_t n, index_t dim, index_t value_dim, const std::vector<float>& q,
              const std::vector<float>& k, const std::vector<float>& v, const alibi::Params& p) {
  Decode r{std::vector<float>(std::size_t(value_dim)), std::vector<float>(std::size_t(value_dim))};
  const auto qv = alibi::make_view(q.data(), 1, 1, 1, dim);
  const auto kv = alibi::make_view(k.data(), 1, n, 1, dim);
  const auto vv = alibi::make_view(v.data(), 1, n, 1, value_dim);
  alibi::attention(qv, kv, vv, alibi::make_view(r.out.data(), 1, 1, 1, value_dim), p, &r.lse);
  alibi::reference::attention(qv, kv, vv, alibi::make_view(r.ref.data(), 1, 1, 1, value_dim), p,
                              &r.ref_lse);
  return r;
}

}  // namespace

TEST_CASE("a decode row against 10^6 keys sees the exact bias at distance 10^6", "[long]") {
  // Keys at distances 0..N with N = 10^6 behind the query, absolute positions from 3e7 (past
  // 2^24, where float positions would already be off by 2). Every key is zero except the farthest,
  // whose dot product with q is exactly m * N, so its logit is 0 if and only if its bias is exactly
  // -m N. The weights then have a closed form: 1 for the farthest key and r^d (r = e^-m) for the
  // zero keys at distance d < N, so with v = (1, 0) on the far key and (0, 1) elsewhere,
  // out_0 = 1 / (1 + S), out_1 = S / (1 + S), S = (1 - r^N) / (1 - r), lse = log(1 + S).
  // A distance off by one would move out_0 by a factor e^(-m), 0.4% here.
  const index_t N = 1000000, n = N + 1, dim = 2, value_dim = 2;
  const float m = 1.0f / 256;  // slopes(8) of the last head
  alibi::Params p;
  p.slopes = {m};
  p.scale = 1.0f;
  p.key_offset = 30000000;  // query at 3e7 + N by bottom-right alignment
  std::vector<float> q{1.0f, 0.0f}, k(std::size_t(n * dim), 0.0f), v(std::size_t(n * value_dim));
  k[0] = float(double(m) * double(N));  // 3906.25, exact
  for (index_t t = 0; t < n; ++t) {
    v[std::size_t(t * value_dim)] = t == 0 ? 1.0f : 0.0f;
    v[std::size_t(t * value_dim + 1)] = t == 0 ? 0.0f : 1.0f;
  }
  const long double r = std::exp(-static_cast<long double>(m));
  const long double S = (1 - std::pow(r, static_cast<long double>(N))) / (1 - r);
  const Decode d = decode(n, dim, value_dim, q, k, v, p);
  // The float kernel sums about 1500 non-negligible weights (nearest first): 1e-5 relative is
  // its round-off, and still 400 times finer than a distance off by one.
  for (const auto* out : {&d.out, &d.ref}) {
    CHECK((*out)[0] == Approx(double(1 / (1 + S))).epsilon(1e-5));
    CHECK((*out)[1] == Approx(double(S / (1 + S))).epsilon(1e-5));
  }
  CHECK(d.ref[0] == Approx(double(1 / (1 + S))).epsilon(1e-6));
  CHECK(d.lse == Approx(double(std::log(1 + S))).epsilon(1e-5));
  CHECK(d.ref_lse == Approx(double(std::log(1 + S))).epsilon(2e-7));
}

TEST_CASE("explicit positions near 2^31 and beyond keep exact distances", "[long]") {
  // The same small problem at positions 0 and shifted by 3e9: only distances matter, so the
  // outputs must be bitwise equal whatever the shift.
  const Shape s{1, 24, 300, 2, 1, 8, 8};
  const auto q = random_values<float>(s.q_size(), 61);
  const auto k = random_values<float>(s.k_size(), 62);
  const auto v = random_values<float>(s.v_size(), 63);
  std::vector<std::vector<float>> outs;
  for (index_t shift : {index_t(0), index_t(3000000000), index_t(-3000000000)}) {
    for (bool causal : {true, false}) {
      alibi::Params p;
      p.causal = causal;
      p.window_left = 100;
      p.key_offset = shift;
      p.query_offset = shift + 250;
      outs.emplace_back(s.out_size());
      alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                       out_view(s, outs.back().data()), p);
      // Anchored to the oracle at these positions: a kernel ignoring the offsets would be
      // shift invariant too.
      const Expected e = oracle(s, q, k, v, p);
      for (std::size_t i = 0; i < e.out.size(); ++i)
        REQUIRE(outs.back()[i] == Approx(e.out[i]).margin(1e-6));
    }
  }
  for (std::size_t i = 2; i < outs.size(); ++i) CHECK(outs[i] == outs[i % 2]);
  CHECK(outs[0] != outs[1]);  // causal and bidirectional do differ: the comparison has teeth
}

TEST_CASE("far keys beyond the float round-off distance leave the output unchanged",
          "[long][extrapolation]") {
  // Recent keys sit at distances 0..W-1. With |scale q.k| <= L on every key, a key at distance d
  // has weight at most e^(L - m d) against a total of at least e^(-L); a prefix beyond distance W
  // therefore moves the output by at most e^(2L - m W) / (1 - e^-m) relative, below 2^-24 here.
  // The prefix is adversarial: its keys are aligned with q at the largest norm and carry values
  // of 1 where the recent values are random, so any weight it got would shift the output.
  const index_t dim = 16, value_dim = 4, W = 200;
  const float m = 0.25f;
  const float L = 2.0f;  // |q| |k| scale <= L: q and keys of norm sqrt(L) with scale 1
  REQUIRE(std::exp(2.0 * L - double(m) * W) / (1 - std::exp(-double(m))) < std::ldexp(1.0, -24));
  std::vector<float> q(std::size_t(dim), 0.0f);
  q[0] = std::sqrt(L);
  const auto recent_k = random_values<float>(std::size_t(W * dim), 71, std::sqrt(L / dim));
  const auto recent_v = random_values<float>(std::size_t(W * value_dim), 72);

  const auto with_prefix = [&](index_t prefix, float slope) {
    std::vector<float> k(std::size_t(prefix * dim), 0.0f), v(std::size_t(prefix * value_dim), 1.0f);
    for (index_t t = 0; t < prefix; ++t) k[std::size_t(t * dim)] = std::sqrt(L);
    k.insert(k.end(), recent_k.begin(), recent_k.end());
    v.insert(v.end(), recent_v.begin(), recent_v.end());
    alibi::Params p;
    p.slopes = {slope};
    p.scale = 1.0f;
    return decode(prefix + W, dim, value_dim, q, k, v, p).out;
  };

  const std::vector<float> alone = with_prefix(0, m);
  for (index_t prefix : {1, 100, 10000, 1000000}) {
    INFO("prefix of " << prefix << " far keys");
    const std::vector<float> out = with_prefix(prefix, m);
    for (index_t d = 0; d < value_dim; ++d)
      CHECK(out[std::size_t(d)] == Approx(alone[std::size_t(d)]).margin(4e-7));
  }
  // Without the decay (slope 0) the same prefix takes over the output: the property is ALiBi's.
  const std::vector<float> flat_alone = with_prefix(0, 0.0f), flat = with_prefix(10000, 0.0f);
  CHECK(std::fabs(flat[0] - flat_alone[0]) > 0.1f);
}

TEST_CASE("the largest accepted offsets attend every key", "[long]") {
  // Offsets of +-2^59 put the keys 2^60 behind the query: with slope 2^-62 the bias is -0.25 and
  // finite; position arithmetic with the unbounded window must not overflow and mask the keys.
  const index_t big = index_t(1) << 59;
  const Shape s{1, 1, 3, 1, 1, 2, 2};
  alibi::Params p;
  p.causal = false;
  p.slopes = {std::ldexp(1.0f, -62)};
  p.query_offset = big;
  p.key_offset = -big;
  const std::vector<float> q{1, 0}, k{1, 0, 0, 1, 1, 1}, v{1, 2, 3, 4, 5, 6};
  std::vector<float> out(2), ref(2);
  float lse = 0;
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), p, &lse);
  alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                              out_view(s, ref.data()), p);
  CHECK(std::isfinite(lse));
  CHECK(out[0] == Approx(ref[0]).epsilon(1e-6));
  CHECK(out[1] == Approx(ref[1]).epsilon(1e-6));
  CHECK(out[0] > 1.5f);  // an average of 1, 3, 5, not the 0 of an empty row
}

TEST_CASE("keys far from their queries keep full float precision, forward and backward", "[long]") {
  // Every key 10^3 to 10^8 positions behind the queries: the bias is -m d with m d up to 5e7, far
  // beyond float's integer range. The kernels take the nearest distance out of the bias (and put
  // it back into lse in double), so outputs and gradients stay as precise as for near keys.
  const Shape s{1, 8, 64, 2, 2, 16, 16};
  const auto q = random_values<float>(s.q_size(), 191), k = random_values<float>(s.k_size(), 192),
             v = random_values<float>(s.v_size(), 193),
             dout = random_values<float>(s.out_size(), 194);
  for (const index_t far : {index_t(1000), index_t(100000), index_t(100000000)}) {
    for (const bool causal : {true, false}) {
      INFO("far " << far << ", causal " << causal);
      alibi::Params p;
      p.causal = causal;
      p.slopes = {0.5f, 0.01f};
      p.query_offset = s.seq_k + far;
      std::vector<float> out(s.out_size()), ref(s.out_size()), lse(s.lse_size()),
          ref_lse(s.lse_size());
      const alibi::TensorView<const float> qv = q_view(s, q.data()), kv = k_view(s, k.data()),
                                           vv = v_view(s, v.data());
      alibi::attention(qv, kv, vv, out_view(s, out.data()), p, lse.data());
      alibi::reference::attention(qv, kv, vv, out_view(s, ref.data()), p, ref_lse.data());
      for (std::size_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(ref[i]).margin(2e-6));
      for (std::size_t i = 0; i < lse.size(); ++i)
        REQUIRE(lse[i] == Approx(ref_lse[i]).epsilon(1e-6));
      std::vector<float> dq(q.size()), dk(k.size()), dv(v.size()), rq(q.size()), rk(k.size()),
          rv(v.size()), dm(2), rm(2);
      const alibi::TensorView<const float> ov = out_view(s, ref.data()),
                                           gv = out_view(s, dout.data());
      alibi::attention_backward(qv, kv, vv, ov, gv, ref_lse.data(), q_view(s, dq.data()),
                                k_view(s, dk.data()), v_view(s, dv.data()), p, dm.data());
      alibi::reference::attention_backward(qv, kv, vv, ov, gv, ref_lse.data(), q_view(s, rq.data()),
                                           k_view(s, rk.data()), v_view(s, rv.data()), p,
                                           rm.data());
      for (std::size_t i = 0; i < dq.size(); ++i) REQUIRE(dq[i] == Approx(rq[i]).margin(2e-5));
      for (std::size_t i = 0; i < dk.size(); ++i) REQUIRE(dk[i] == Approx(rk[i]).margin(2e-5));
      // The slope gradient sums dS |p - t|; the dS of a row sum to 0, so both backward passes
      // sum dS (|p - t| - the row's nearest distance), exact at any distance.
      for (std::size_t i = 0; i < dm.size(); ++i)
        CHECK(dm[i] == Approx(rm[i]).epsilon(1e-3).margin(1e-3));
    }
  }
}
