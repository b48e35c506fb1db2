// Learned attention sinks (Params::sink_logits): the fused forward and the reference against
// the reference over one extra key that plays the sink, and against the float64 oracle with the
// sink folded in by hand; the backward against the reference and finite differences.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>

using namespace alibi_test;

namespace {

/// The oracle's result with a sink s_h joined in float64: lse' = log(e^lse + e^s),
/// out' = out e^(lse - lse'); a row with no key gets out 0 and lse s.
Expected fold_sinks(const Shape& s, Expected e, const std::vector<float>& sinks) {
  for (index_t b = 0; b < s.batch; ++b)
    for (index_t h = 0; h < s.heads_q; ++h)
      for (index_t i = 0; i < s.seq_q; ++i) {
        double& lse = e.lse[std::size_t((b * s.heads_q + h) * s.seq_q + i)];
        const double sink = sinks[std::size_t(h)];
        const double joined = std::isinf(lse) ? sink : std::log(std::exp(lse) + std::exp(sink));
        const double factor = std::isinf(lse) ? 0.0 : std::exp(lse - joined);
        lse = joined;
        for (index_t d = 0; d < s.value_dim; ++d)
          e.out[std::size_t(((b * s.seq_q + i) * s.heads_q + h) * s.value_dim + d)] *= factor;
      }
  return e;
}

/// The same problem with the sinks as one more key in double: head_dim + 1, the sink key first
/// (at position key_offset - 1, so the others keep theirs) with k = e_D and v = 0, the others
/// with k_D = 0, and each query's q_D chosen so that scale q_D - m |p - (key_offset - 1)| = s_h.
struct WithSinkKey {
  Shape shape;
  std::vector<double> q, k, v;
  alibi::Params params;
};

WithSinkKey with_sink_key(const Shape& s, const std::vector<float>& q, const std::vector<float>& k,
                          const std::vector<float>& v, const alibi::Params& p) {
  WithSinkKey w{s, {}, {}, {}, p};
  w.shape.head_dim = s.head_dim + 1;
  w.shape.seq_k = s.seq_k + 1;
  w.params.sink_logits.clear();
  w.params.scale = p.scale != 0 ? p.scale : 1.0f / std::sqrt(float(s.head_dim));
  w.params.slopes = p.slopes.empty() ? alibi::slopes(int(s.heads_q)) : p.slopes;
  const index_t key_offset = p.key_offset.value_or(0);
  w.params.key_offset = key_offset - 1;
  if (!p.seqlens_k.empty())
    for (index_t& n : w.params.seqlens_k) ++n;
  const index_t D = w.shape.head_dim;
  w.q.assign(w.shape.q_size(), 0.0);
  w.k.assign(w.shape.k_size(), 0.0);
  w.v.assign(w.shape.v_size(), 0.0);
  for (index_t b = 0; b < s.batch; ++b) {
    const index_t valid = p.seqlens_k.empty() ? s.seq_k : p.seqlens_k[std::size_t(b)];
    for (index_t i = 0; i < s.seq_q; ++i)
      for (index_t h = 0; h < s.heads_q; ++h) {
        const index_t position =
            p.query_offset ? *p.query_offset + i : key_offset + valid - s.seq_q + i;
        const double m = w.params.slopes[std::size_t(h)];
        double* row = &w.q[std::size_t(((b * s.seq_q + i) * s.heads_q + h) * D)];
        for (index_t d = 0; d < s.head_dim; ++d)
          row[d] = q[std::size_t(((b * s.seq_q + i) * s.heads_q + h) * s.head_dim + d)];
        row[s.head_dim] = (double(p.sink_logits[std::size_t(h)]) +
                           m * double(std::llabs(position - (key_offset - 1)))) /
                          double(w.params.scale);
      }
    for (index_t h = 0; h < s.heads_kv; ++h) {
      w.k[std::size_t(((b * w.shape.seq_k) * s.heads_kv + h) * D + s.head_dim)] = 1.0;
      for (index_t t = 0; t < s.seq_k; ++t) {
        for (index_t d = 0; d < s.head_dim; ++d)
          w.k[std::size_t(((b * w.shape.seq_k + t + 1) * s.heads_kv + h) * D + d)] =
              k[std::size_t(((b * s.seq_k + t) * s.heads_kv + h) * s.head_dim + d)];
        for (index_t d = 0; d < s.value_dim; ++d)
          w.v[std::size_t(((b * w.shape.seq_k + t + 1) * s.heads_kv + h) * s.value_dim + d)] =
              v[std::size_t(((b * s.seq_k + t) * s.heads_kv + h) * s.value_dim + d)];
      }
    }
  }
  return w;
}

std::vector<float> some_sinks(index_t heads, std::uint32_t seed) {
  // Around the size of the rows' lse (a few units), so that the sink takes a real share.
  std::vector<float> sinks = random_values<float>(std::size_t(heads), seed, 3.0f);
  for (float& s : sinks) s += 1.0f;
  return sinks;
}

}  // namespace

TEST_CASE("sinks: fused and reference equal the reference over one extra key", "[sinks]") {
  // The classes where a key before every other is allowed to every query: no window, no query
  // before the keys (the sink is unmasked; a key is not).
  const std::vector<Case> cases = [] {
    std::vector<Case> all = semantic_cases(), kept;
    for (const Case& c : all)
      if (c.params.window_left < 0 && c.params.window_right < 0 && !c.params.query_offset &&
          c.shape.seq_q <= c.shape.seq_k &&
          (c.params.slopes.empty() || c.params.slopes.size() == std::size_t(c.shape.heads_q)) &&
          std::all_of(c.params.seqlens_k.begin(), c.params.seqlens_k.end(),
                      [&](index_t n) { return n >= c.shape.seq_q; }))
        kept.push_back(c);
    return kept;
  }();
  REQUIRE(cases.size() >= 8);
  std::uint32_t seed = 500;
  for (const Case& c : cases) {
    INFO(c.name);
    const Shape& s = c.shape;
    const auto q = random_values<float>(s.q_size(), seed++);
    const auto k = random_values<float>(s.k_size(), seed++);
    const auto v = random_values<float>(s.v_size(), seed++);
    alibi::Params p = c.params;
    p.sink_logits = some_sinks(s.heads_q, seed++);
    const WithSinkKey w = with_sink_key(s, q, k, v, p);
    std::vector<double> expected(s.out_size());
    std::vector<float> expected_lse(s.lse_size());
    alibi::reference::attention(q_view(w.shape, w.q.data()), k_view(w.shape, w.k.data()),
                                v_view(w.shape, w.v.data()), out_view(w.shape, expected.data()),
                                w.params, expected_lse.data());

    std::vector<float> out(s.out_size()), lse(s.lse_size());
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, out.data()), p, lse.data());
    std::vector<double> qd(q.begin(), q.end()), kd(k.begin(), k.end()), vd(v.begin(), v.end());
    std::vector<double> ref(s.out_size()), fused_double(s.out_size());
    std::vector<float> ref_lse(s.lse_size()), double_lse(s.lse_size());
    alibi::reference::attention(q_view(s, qd.data()), k_view(s, kd.data()), v_view(s, vd.data()),
                                out_view(s, ref.data()), p, ref_lse.data());
    alibi::attention(q_view(s, qd.data()), k_view(s, kd.data()), v_view(s, vd.data()),
                     out_view(s, fused_double.data()), p, double_lse.data());
    for (std::size_t i = 0; i < out.size(); ++i) {
      REQUIRE(ref[i] == Approx(expected[i]).margin(1e-12));
      REQUIRE(fused_double[i] == Approx(expected[i]).margin(1e-12));
      REQUIRE(out[i] == Approx(expected[i]).margin(2e-6));
    }
    for (std::size_t i = 0; i < lse.size(); ++i) {
      REQUIRE(ref_lse[i] == Approx(expected_lse[i]).epsilon(1e-6));
      REQUIRE(double_lse[i] == Approx(expected_lse[i]).epsilon(1e-6));
      REQUIRE(lse[i] == Approx(expected_lse[i]).epsilon(1e-6).margin(1e-6));
    }
  }
}

TEST_CASE("sinks: every semantic class equals the float64 oracle with the sink folded in",
          "[sinks]") {
  std::uint32_t seed = 600;
  for (const Case& c : semantic_cases()) {
    INFO(c.name);
    const Shape& s = c.shape;
    const auto q = random_values<float>(s.q_size(), seed++);
    const auto k = random_values<float>(s.k_size(), seed++);
    const auto v = random_values<float>(s.v_size(), seed++);
    alibi::Params p = c.params;
    p.sink_logits = some_sinks(s.heads_q, seed++);
    const Expected e = fold_sinks(s, oracle(s, q, k, v, c.params), p.sink_logits);
    std::vector<float> out(s.out_size()), lse(s.lse_size()), ref(s.out_size()),
        ref_lse(s.lse_size());
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, out.data()), p, lse.data());
    alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                                out_view(s, ref.data()), p, ref_lse.data());
    for (std::size_t i = 0; i < out.size(); ++i) {
      REQUIRE(out[i] == Approx(e.out[i]).margin(2e-6));
      REQUIRE(ref[i] == Approx(e.out[i]).margin(1e-7));
    }
    for (std::size_t i = 0; i < lse.size(); ++i) {
      REQUIRE(lse[i] == Approx(e.lse[i]).epsilon(1e-6).margin(1e-6));
      REQUIRE(ref_lse[i] == Approx(e.lse[i]).epsilon(1e-7));
    }
  }
}

TEST_CASE("sinks: a row with no allowed key gets out 0 and lse = its sink", "[sinks]") {
  const Shape s{1, 10, 20, 2, 2, 8, 8};
  const auto q = random_values<float>(s.q_size(), 1), k = random_values<float>(s.k_size(), 2),
             v = random_values<float>(s.v_size(), 3);
  alibi::Params p;
  p.query_offset = -50;  // every query before every key
  p.sink_logits = {0.25f, -3.0f};
  std::vector<float> out(s.out_size(), 7.0f), lse(s.lse_size());
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), p, lse.data());
  for (float x : out) REQUIRE(x == 0.0f);
  for (index_t h = 0; h < 2; ++h)
    for (index_t i = 0; i < s.seq_q; ++i)
      REQUIRE(lse[std::size_t(h * s.seq_q + i)] == p.sink_logits[h]);
}

TEST_CASE("sinks: a split decode joins the sink once, the same for any thread count",
          "[sinks][threads]") {
  // More keys than one decode chunk (16384): the row is cut into chunks that merge.
  const Shape s{2, 1, 40000, 4, 2, 8, 8};
  const auto q = random_values<float>(s.q_size(), 11, 2.0f),
             k = random_values<float>(s.k_size(), 12, 2.0f),
             v = random_values<float>(s.v_size(), 13);
  for (float tolerance : {0.0f, 0x1p-24f}) {
    INFO("tail_tolerance " << tolerance);
    alibi::Params p;
    p.tail_tolerance = tolerance;
    // Shallow slopes, so the far chunks matter; and a sink in the range of the rows' lse.
    p.slopes = {0.0f, 1e-4f, 1e-3f, 0.5f};
    p.sink_logits = {10.5f, 9.0f, 6.0f, 0.5f};
    std::vector<float> ref(s.out_size()), ref_lse(s.lse_size());
    alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                                out_view(s, ref.data()), p, ref_lse.data());
    std::vector<float> one(s.out_size()), two(s.out_size()), lse(s.lse_size()),
        lse_two(s.lse_size());
    p.num_threads = 1;
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, one.data()), p, lse.data());
    p.num_threads = 2;
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, two.data()), p, lse_two.data());
    REQUIRE(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) == 0);
    REQUIRE(std::memcmp(lse.data(), lse_two.data(), lse.size() * sizeof(float)) == 0);
    // Float sums over 40000 keys.
    for (std::size_t i = 0; i < one.size(); ++i) REQUIRE(one[i] == Approx(ref[i]).margin(2e-5));
    for (std::size_t i = 0; i < lse.size(); ++i)
      REQUIRE(lse[i] == Approx(ref_lse[i]).epsilon(1e-6));
  }
}

TEST_CASE("sinks: the cache path joins them too", "[sinks][kv_cache]") {
  const Shape s{1, 1, 300, 4, 2, 16, 16};
  const auto k = random_values<float>(s.k_size(), 21), v = random_values<float>(s.v_size(), 22),
             q = random_values<float>(s.q_size(), 23);
  alibi::PagedKVCache cache({s.heads_kv, s.head_dim});
  const alibi::SequenceId id = cache.add_sequence();
  cache.append(id, k_view(s, k.data()), v_view(s, v.data()));
  alibi::Params p;
  p.sink_logits = some_sinks(s.heads_q, 24);
  std::vector<float> out(s.out_size()), ref(s.out_size());
  alibi::attention(q_view(s, q.data()), cache, {id}, out_view(s, out.data()), p);
  alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                              out_view(s, ref.data()), p);
  for (std::size_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(ref[i]).margin(2e-6));
}

TEST_CASE("sinks and the eviction limit are validated before anything is written",
          "[sinks][validation]") {
  const Shape s{1, 4, 4, 4, 2, 8, 8};
  const auto q = random_values<float>(s.q_size(), 31), k = random_values<float>(s.k_size(), 32),
             v = random_values<float>(s.v_size(), 33);
  const auto call = [&](const alibi::Params& p) {
    std::vector<float> out(s.out_size(), 5.0f);
    try {
      alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                       out_view(s, out.data()), p);
    } catch (...) {
      for (float x : out) REQUIRE(x == 5.0f);
      throw;
    }
  };
  alibi::Params p;
  p.sink_logits = {1.0f, 2.0f};  // 2 for 4 query heads
  REQUIRE_THROWS_WITH(call(p), Catch::Contains("params.sink_logits has 2 values") &&
                                   Catch::Contains("4 query heads"));
  p.sink_logits = {1.0f, 2.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f};
  REQUIRE_THROWS_WITH(call(p), Catch::Contains("params.sink_logits[2] is not finite"));
  p.sink_logits = {1.0f, 2.0f, std::numeric_limits<float>::infinity(), 0.0f};
  REQUIRE_THROWS_AS(call(p), std::invalid_argument);
  p.sink_logits.clear();
  p.max_evicted_weight = -1e-6;
  REQUIRE_THROWS_WITH(call(p), Catch::Contains("params.max_evicted_weight"));
  p.max_evicted_weight = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_AS(call(p), std::invalid_argument);
  p.max_evicted_weight = 1e-6;
  alibi::AttentionStats stats;
  stats.evicted_weight_bound = 99;
  p.stats = &stats;
  REQUIRE_NOTHROW(call(p));
  REQUIRE(stats.evicted_weight_bound == 0);  // nothing evicted from views
}

namespace {

/// L = sum(out * weight) over the reference in double.
double sink_loss(const Shape& s, const std::vector<double>& q, const std::vector<double>& k,
                 const std::vector<double>& v, const alibi::Params& p,
                 const std::vector<double>& weight) {
  std::vector<double> out(s.out_size());
  alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                              out_view(s, out.data()), p);
  double l = 0;
  for (std::size_t i = 0; i < out.size(); ++i) l += out[i] * weight[i];
  return l;
}

}  // namespace

TEST_CASE("sinks: gradients match finite differences and the reference", "[sinks][backward]") {
  struct Problem {
    const char* name;
    Shape shape;
    alibi::Params params;
  };
  std::vector<Problem> problems;
  problems.push_back({"causal GQA", {2, 30, 30, 4, 2, 8, 8}, {}});
  alibi::Params window;
  window.window_left = 6;
  problems.push_back({"window, rows beyond the keys", {1, 40, 25, 2, 2, 8, 8}, window});
  alibi::Params far;
  far.key_offset = 1000;  // |lse| > 64: the backward refines the lse in double
  far.query_offset = 1100;
  far.causal = false;
  far.slopes = {1.0f, 0.8f};
  problems.push_back({"far keys, bidirectional", {1, 12, 40, 2, 1, 8, 8}, far});
  std::uint32_t seed = 700;
  for (Problem& pr : problems) {
    INFO(pr.name);
    const Shape& s = pr.shape;
    alibi::Params& p = pr.params;
    p.sink_logits = some_sinks(s.heads_q, seed++);
    if (p.key_offset) p.sink_logits = {-95.0f, -70.0f};  // near those rows' lse
    auto q = random_values<double>(s.q_size(), seed++, 1.5f);
    auto k = random_values<double>(s.k_size(), seed++, 1.5f);
    auto v = random_values<double>(s.v_size(), seed++);
    const auto weight = random_values<double>(s.out_size(), seed++);
    // Fused and reference backward in double.
    std::vector<double> out(s.out_size());
    std::vector<float> lse(s.lse_size());
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, out.data()), p, lse.data());
    const auto qv = q_view<const double>(s, q.data()), kv = k_view<const double>(s, k.data()),
               vv = v_view<const double>(s, v.data());
    const auto ov = out_view<const double>(s, out.data()),
               gv = out_view<const double>(s, weight.data());
    std::vector<double> dq(q.size()), dk(k.size()), dv(v.size()), rq(q.size()), rk(k.size()),
        rv(v.size());
    std::vector<float> ds(std::size_t(s.heads_q)), rs(ds.size());
    alibi::attention_backward(qv, kv, vv, ov, gv, lse.data(), q_view(s, dq.data()),
                              k_view(s, dk.data()), v_view(s, dv.data()), p, nullptr, ds.data());
    alibi::reference::attention_backward(qv, kv, vv, ov, gv, lse.data(), q_view(s, rq.data()),
                                         k_view(s, rk.data()), v_view(s, rv.data()), p, nullptr,
                                         rs.data());
    for (std::size_t i = 0; i < dq.size(); ++i) REQUIRE(dq[i] == Approx(rq[i]).margin(1e-9));
    for (std::size_t i = 0; i < dk.size(); ++i) REQUIRE(dk[i] == Approx(rk[i]).margin(1e-9));
    for (std::size_t i = 0; i < dv.size(); ++i) REQUIRE(dv[i] == Approx(rv[i]).margin(1e-9));
    // d/ds by central differences on float-exact steps, Richardson-combined.
    for (std::size_t h = 0; h < ds.size(); ++h) {
      const auto central = [&](float step) {
        alibi::Params plus = p, minus = p;
        plus.sink_logits[h] += step;
        minus.sink_logits[h] -= step;
        return (sink_loss(s, q, k, v, plus, weight) - sink_loss(s, q, k, v, minus, weight)) /
               double(plus.sink_logits[h] - minus.sink_logits[h]);
      };
      const double fd = (4 * central(1.0f / 1024) - central(1.0f / 512)) / 3;
      CHECK(double(rs[h]) == Approx(fd).epsilon(1e-5).margin(1e-7));
      CHECK(double(ds[h]) == Approx(fd).epsilon(1e-5).margin(1e-7));
    }
    // dq along a random direction, against finite differences (the sink changes P).
    const auto rdir = random_values<double>(q.size(), seed++);
    const double eps = 1e-5;
    std::vector<double> qp = q, qm = q;
    for (std::size_t i = 0; i < q.size(); ++i) qp[i] += eps * rdir[i], qm[i] -= eps * rdir[i];
    const double fq =
        (sink_loss(s, qp, k, v, p, weight) - sink_loss(s, qm, k, v, p, weight)) / (2 * eps);
    double along = 0;
    for (std::size_t i = 0; i < q.size(); ++i) along += dq[i] * rdir[i];
    CHECK(along == Approx(fq).epsilon(1e-6).margin(1e-9));
  }
}
