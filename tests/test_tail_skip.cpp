// The tail skip (Params::tail_tolerance): where ALiBi's decay makes far keys negligible the walk
// stops early, within the stated bound of the dense result; where the bound cannot be proved
// (zero or tiny slopes, a far key aligned with the query, NaN) it visits everything.
#include "test_support.hpp"

#include <catch2/catch.hpp>

using namespace alibi_test;

namespace {

struct Run {
  std::vector<float> out;
  alibi::AttentionStats stats;
};

Run run(const Shape& s, const std::vector<float>& q, const std::vector<float>& k,
        const std::vector<float>& v, alibi::Params p, float tolerance) {
  Run r{std::vector<float>(s.out_size()), {}};
  p.tail_tolerance = tolerance;
  p.stats = &r.stats;
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, r.out.data()), p);
  return r;
}

/// The stated guarantee: each output moves by at most about 2 x tolerance x max |v|, measured
/// against the float64 oracle. Float round-off comes on top, the dense call's own (the skip sums
/// nearest first, the dense call forward through memory): allowed twice the dense call's worst.
void check_within_bound(const Run& skipped, const Run& dense, const std::vector<float>& v,
                        float tolerance, const std::vector<double>& ref) {
  float max_v = 0;
  for (float x : v) max_v = std::max(max_v, std::fabs(x));
  double dense_error = 0;
  for (std::size_t i = 0; i < ref.size(); ++i)
    dense_error = std::max(dense_error, std::fabs(double(dense.out[i]) - ref[i]));
  REQUIRE(dense_error < 1e-6);
  for (std::size_t i = 0; i < ref.size(); ++i) {
    INFO("index " << i << ", dense error " << dense_error);
    REQUIRE(std::fabs(double(skipped.out[i]) - ref[i]) <=
            2.0 * tolerance * max_v + 2 * dense_error);
  }
}

}  // namespace

TEST_CASE("the default skips far tiles and stays within the bound of the dense result", "[tail]") {
  // A causal chunk at the end of 3000 keys, slopes(8): heads with slope 1/2 need a few dozen
  // keys, the slowest (1/256) a few thousand.
  for (const bool causal : {true, false}) {
    const Shape s{1, 16, 3000, 8, 8, 32, 32};
    alibi::Params p;
    p.causal = causal;
    if (!causal) p.query_offset = 1500;  // keys on both sides
    const auto q = random_values<float>(s.q_size(), 81);
    const auto k = random_values<float>(s.k_size(), 82);
    const auto v = random_values<float>(s.v_size(), 83);
    const float tolerance = 0x1p-24f;
    const Run dense = run(s, q, k, v, p, 0), skipped = run(s, q, k, v, p, tolerance);
    INFO("causal " << causal << ": visited " << skipped.stats.keys_visited << " of "
                   << skipped.stats.keys_allowed);
    CHECK(dense.stats.keys_visited == dense.stats.keys_allowed);
    CHECK(skipped.stats.keys_allowed == dense.stats.keys_allowed);
    // Skipping did happen: causal, most heads stop within a tile or two of the diagonal; with keys
    // on both sides both walks must reach the bound.
    CHECK(skipped.stats.keys_visited < dense.stats.keys_visited * (causal ? 2 : 3) / 4);
    const std::vector<double> ref = oracle(s, q, k, v, p).out;
    check_within_bound(skipped, dense, v, tolerance, ref);
    // A looser tolerance skips more, and still keeps its own bound.
    const Run loose = run(s, q, k, v, p, 1e-3f);
    CHECK(loose.stats.keys_visited <= skipped.stats.keys_visited);
    check_within_bound(loose, dense, v, 1e-3f, ref);
  }
}

TEST_CASE("a far key aligned with the query is never skipped", "[tail]") {
  // Every key is small except one 2500 positions back, aligned with q and as long as it needs to
  // be for its logit to reach 0 against a bias of -m 2500: it carries a weight of the order of
  // the nearest key's, so skipping it would change the output by far more than the tolerance.
  const index_t n = 3000, far = n - 1 - 2500;
  const Shape s{1, 1, n, 1, 1, 16, 4};
  alibi::Params p;
  p.slopes = {0.25f};
  p.scale = 1.0f;
  std::vector<float> q(16, 0.0f);
  q[0] = 1.0f;
  auto k = random_values<float>(s.k_size(), 91, 0.05f);
  for (index_t d = 0; d < 16; ++d) k[std::size_t(far * 16 + d)] = d == 0 ? 0.25f * 2500 : 0.0f;
  auto v = random_values<float>(s.v_size(), 92);
  for (index_t d = 0; d < 4; ++d) v[std::size_t(far * 4 + d)] = 5.0f;
  const Run dense = run(s, q, k, v, p, 0), skipped = run(s, q, k, v, p, 0x1p-24f);
  std::vector<float> ref(s.out_size());
  alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                              out_view(s, ref.data()), p);
  for (std::size_t i = 0; i < ref.size(); ++i) {
    CHECK(skipped.out[i] == Approx(ref[i]).epsilon(1e-5));
    CHECK(dense.out[i] == Approx(ref[i]).epsilon(1e-5));
  }
  CHECK(ref[0] > 0.5f);  // the far value 5 carries about a fifth of the weight
}

TEST_CASE("zero and tiny slopes, mixed per head and per GQA group, keep their keys", "[tail]") {
  // Heads of one kv group with slopes 1, 0, 1e-6 and 0.5: the zero and tiny slopes bound
  // nothing, so their group is walked to the end and matches the dense result.
  const Shape s{2, 4, 1500, 8, 2, 16, 16};
  alibi::Params p;
  p.slopes = {1.0f, 0.0f, 1e-6f, 0.5f, 1.0f, 0.5f, 0.25f, 0.125f,
              0.0f, 0.0f, 0.0f,  0.0f, 1.0f, 1.0f, 1.0f,  1.0f};  // per (batch, head)
  const auto q = random_values<float>(s.q_size(), 101, 3.0f);
  const auto k = random_values<float>(s.k_size(), 102, 3.0f);
  const auto v = random_values<float>(s.v_size(), 103);
  const Run dense = run(s, q, k, v, p, 0), skipped = run(s, q, k, v, p, 0x1p-24f);
  check_within_bound(skipped, dense, v, 0x1p-24f, oracle(s, q, k, v, p).out);
  // Batch 0 group 0 and batch 1 group 0 cannot skip; the all-1 and the 1..1/8 groups can.
  CHECK(skipped.stats.keys_visited < dense.stats.keys_visited);
  CHECK(skipped.stats.keys_visited > dense.stats.keys_visited / 2);

  alibi::Params flat = p;
  flat.slopes.assign(16, 0.0f);
  const Run all = run(s, q, k, v, flat, 0x1p-24f);
  CHECK(all.stats.keys_visited == all.stats.keys_allowed);
}

TEST_CASE("NaN in a far key keeps the walk going and reaches the output", "[tail]") {
  const Shape s{1, 1, 2000, 1, 1, 8, 8};
  alibi::Params p;
  p.slopes = {1.0f};
  const auto q = random_values<float>(s.q_size(), 111);
  auto k = random_values<float>(s.k_size(), 112);
  const auto v = random_values<float>(s.v_size(), 113);
  k[3] = std::nanf("");  // key 0, 1999 positions back
  const Run skipped = run(s, q, k, v, p, 0x1p-24f);
  CHECK(skipped.stats.keys_visited == skipped.stats.keys_allowed);
  CHECK(std::isnan(skipped.out[0]));
}

TEST_CASE("tail_tolerance is validated", "[tail][validation]") {
  const Shape s{1, 1, 4, 1, 1, 2, 2};
  std::vector<float> x(8, 1.0f), out(2, 7.0f);
  for (float bad : {-1e-3f, std::nanf(""), INFINITY}) {
    alibi::Params p;
    p.tail_tolerance = bad;
    CHECK_THROWS_WITH(alibi::attention(q_view(s, x.data()), k_view(s, x.data()),
                                       v_view(s, x.data()), out_view(s, out.data()), p),
                      Catch::Contains("params.tail_tolerance"));
    CHECK(out[0] == 7.0f);
  }
}

TEST_CASE("the partial farthest tile masks the columns past its keys", "[tail]") {
  // Every logit is near -1000, so any score computed against a stale key row (0 logit) would
  // win the row's max and underflow every real weight. A decode row over 601 keys: the walk
  // ends with a partial tile of 89 keys, not a whole number of micro-tiles.
  const Shape s{1, 1, 601, 1, 1, 16, 16};
  std::vector<float> q(16, 0.0f), k(s.k_size(), 0.0f);
  q[0] = -400.0f;
  for (index_t t = 0; t < s.seq_k; ++t) k[std::size_t(t * 16)] = 10.0f;
  const auto v = random_values<float>(s.v_size(), 171);
  alibi::Params p;
  p.slopes = {0.5f};
  std::vector<float> ref(16);
  float ref_lse = 0;
  alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                              out_view(s, ref.data()), p, &ref_lse);
  const Run skipped = run(s, q, k, v, p, 0x1p-24f);
  for (std::size_t i = 0; i < ref.size(); ++i) CHECK(skipped.out[i] == Approx(ref[i]).margin(1e-5));
}
