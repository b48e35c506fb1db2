// The fused kernel against the reference (and the oracle) on every semantic class, on random
// shapes that straddle the tile sizes, on strided views, in every element type, and across
// thread counts.
#include "test_support.hpp"

#include <alibi/detail/kernel_traits.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cstring>

using namespace alibi_test;

namespace {

/// Runs alibi::attention and alibi::reference::attention on the same inputs; returns both outputs
/// and lse, from contiguous views.
template <class T>
struct Both {
  std::vector<T> out, ref;
  std::vector<float> lse, ref_lse;
};

template <class T>
Both<T> run_both(const Shape& s, const std::vector<T>& q, const std::vector<T>& k,
                 const std::vector<T>& v, const alibi::Params& params) {
  Both<T> r{std::vector<T>(s.out_size(), T(-3.0f)), std::vector<T>(s.out_size(), T(-3.0f)),
            std::vector<float>(s.lse_size(), -3.0f), std::vector<float>(s.lse_size(), -3.0f)};
  const auto qv = q_view(s, q.data()), kv = k_view(s, k.data()), vv = v_view(s, v.data());
  alibi::attention(qv, kv, vv, out_view(s, r.out.data()), params, r.lse.data());
  alibi::reference::attention(qv, kv, vv, out_view(s, r.ref.data()), params, r.ref_lse.data());
  return r;
}

/// Both lse are -inf together, or agree to `tolerance` relative (with an absolute floor).
void check_lse(const std::vector<float>& got, const std::vector<float>& want, double tolerance) {
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("lse index " << i);
    if (std::isinf(want[i])) {
      REQUIRE(got[i] == want[i]);
    } else {
      REQUIRE(double(got[i]) == Approx(double(want[i])).epsilon(tolerance).margin(tolerance));
    }
  }
}

// Float accumulation over at most a few hundred keys of O(1) values: the fused result stays
// within a few float ulps (2^-24 ~ 6e-8) of the double reference, times log2 of the key count.
constexpr double float_tolerance = 2e-6;

template <class T>
void check_case(const Shape& s, const alibi::Params& params, std::uint32_t seed, double tolerance,
                float amplitude = 2.0f) {
  const auto q = random_values<T>(s.q_size(), seed, amplitude);
  const auto k = random_values<T>(s.k_size(), seed + 1, amplitude);
  const auto v = random_values<T>(s.v_size(), seed + 2);
  const Both<T> r = run_both(s, q, k, v, params);
  for (std::size_t i = 0; i < r.out.size(); ++i) {
    INFO("out index " << i);
    REQUIRE(double(r.out[i]) == Approx(double(r.ref[i])).margin(tolerance));
  }
  check_lse(r.lse, r.ref_lse, tolerance);
}

}  // namespace

TEST_CASE("fused matches the reference on every semantic class", "[attention]") {
  std::uint32_t seed = 100;
  for (const Case& c : semantic_cases()) {
    INFO(c.name);
    check_case<float>(c.shape, c.params, seed += 3, float_tolerance);
    check_case<double>(c.shape, c.params, seed += 3, 1e-12);
  }
}

TEST_CASE("fused in double matches the float64 oracle", "[attention]") {
  std::uint32_t seed = 500;
  for (const Case& c : semantic_cases()) {
    INFO(c.name);
    const Shape& s = c.shape;
    const auto q = random_values<double>(s.q_size(), seed++, 2.0f);
    const auto k = random_values<double>(s.k_size(), seed++, 2.0f);
    const auto v = random_values<double>(s.v_size(), seed++);
    std::vector<double> out(s.out_size());
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, out.data()), c.params);
    const Expected e = oracle(s, q, k, v, c.params);
    for (std::size_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(e.out[i]).margin(1e-12));
  }
}

TEST_CASE("fused matches the reference on random shapes straddling the tiles", "[attention]") {
  constexpr index_t QB = alibi::detail::kernel_traits<float>::query_rows;
  constexpr index_t KB = alibi::detail::kernel_traits<float>::key_block;
  const std::vector<index_t> lengths{1, 2, QB - 1, QB, QB + 1, KB - 1, KB, KB + 1, 2 * KB + 1};
  const std::vector<index_t> dims{1, 2, 3, 8, 31, 64, 65, 128, 200, 256};
  const std::vector<std::pair<index_t, index_t>> heads{{1, 1}, {2, 1}, {4, 2}, {3, 3}};
  std::mt19937 rng(2024);
  const auto pick = [&](const auto& list) { return list[rng() % list.size()]; };
  for (int iteration = 0; iteration < 40; ++iteration) {
    Shape s;
    s.batch = 1 + index_t(rng() % 2);
    s.seq_k = pick(lengths);
    // Sq = 1, Sq < Sk and Sq = Sk all occur; Sq > Sk as well (leading rows empty when causal).
    const int relation = int(rng() % 4);
    s.seq_q = relation == 0   ? 1
              : relation == 1 ? 1 + index_t(rng() % s.seq_k)
              : relation == 2 ? s.seq_k
                              : pick(lengths);
    std::tie(s.heads_q, s.heads_kv) = pick(heads);
    s.head_dim = pick(dims);
    s.value_dim = rng() % 4 == 0 ? pick(dims) : s.head_dim;
    alibi::Params p;
    p.causal = rng() % 3 != 0;
    if (rng() % 4 == 0) p.window_left = index_t(rng() % 80);
    if (!p.causal && rng() % 4 == 0) p.window_right = index_t(rng() % 80);
    INFO("iteration " << iteration << ": B " << s.batch << ", Sq " << s.seq_q << ", Sk " << s.seq_k
                      << ", Hq " << s.heads_q << ", Hkv " << s.heads_kv << ", D " << s.head_dim
                      << ", Dv " << s.value_dim << ", causal " << p.causal << ", window ("
                      << p.window_left << ", " << p.window_right << ")");
    check_case<float>(s, p, 1000 + std::uint32_t(iteration) * 7, float_tolerance, 1.0f);
  }
}

TEST_CASE("decode-shaped calls (up to 8 query rows per kv head) match the reference",
          "[attention]") {
  // A few query rows per kv head take their own walk (rows vectorised over head_dim, several
  // keys per step, keys left over one at a time): every row count up to 8, key counts around the
  // tile and the step, both sides of the diagonal, windows, and value_dim != head_dim.
  const std::vector<std::array<index_t, 3>> groups{{1, 1, 1}, {2, 1, 1}, {3, 1, 1}, {4, 1, 1},
                                                   {4, 1, 2}, {3, 1, 2}, {8, 1, 1}, {4, 2, 2}};
  std::uint32_t seed = 7000;
  for (const auto& [heads_q, heads_kv, seq_q] : groups)
    for (const index_t seq_k : {1, 3, 17, 255, 258, 601})
      for (const index_t head_dim : {16, 64, 128})
        for (int mask = 0; mask < 3; ++mask) {
          Shape s;
          s.batch = 2;
          s.heads_q = heads_q;
          s.heads_kv = heads_kv;
          s.seq_q = seq_q;
          s.seq_k = seq_k;
          s.head_dim = head_dim;
          s.value_dim = mask == 2 ? 48 : head_dim;
          alibi::Params p;
          p.causal = mask != 1;
          if (mask == 1) p.window_left = 200, p.window_right = 5;
          if (mask == 2) p.window_left = 100, p.query_offset = seq_k / 2;
          INFO("Hq " << heads_q << ", Hkv " << heads_kv << ", Sq " << seq_q << ", Sk " << seq_k
                     << ", D " << head_dim << ", mask " << mask);
          check_case<float>(s, p, seed += 3, float_tolerance, 1.0f);
        }
}

TEST_CASE("large logits do not overflow the softmax", "[attention]") {
  // |scale q.k| reaches hundreds: exp without the running max would overflow float.
  const Shape s{1, 70, 200, 2, 2, 32, 32};
  for (bool causal : {true, false}) {
    alibi::Params p;
    p.causal = causal;
    check_case<float>(s, p, 77, 1e-5, 6.0f);
  }
}

TEST_CASE("half and bfloat16 storage agree with the reference to one storage ulp", "[attention]") {
  // Both results are the same quantity rounded once to the storage type: the reference rounds its
  // double result, the kernel its float one, and the two pre-rounding values differ by float
  // round-off (far below a half or bfloat16 ulp). Two roundings of nearly equal numbers land at
  // most one ulp apart: 2^-10 relative for half (11-bit significand), 2^-7 for bfloat16.
  const auto one_ulp_bound = [](auto tag, double bits, std::uint32_t seed) {
    using T = decltype(tag);
    for (const Case& c : semantic_cases()) {
      INFO(c.name);
      const Shape& s = c.shape;
      const auto q = random_values<T>(s.q_size(), seed++, 2.0f);
      const auto k = random_values<T>(s.k_size(), seed++, 2.0f);
      const auto v = random_values<T>(s.v_size(), seed++);
      const Both<T> r = run_both(s, q, k, v, c.params);
      for (std::size_t i = 0; i < r.out.size(); ++i) {
        const double got = double(float(r.out[i])), want = double(float(r.ref[i]));
        INFO("out index " << i << ": " << got << " vs " << want);
        REQUIRE(std::fabs(got - want) <= std::ldexp(std::fabs(want), -int(bits) + 1) + 1e-7);
      }
      check_lse(r.lse, r.ref_lse, float_tolerance);  // lse is float whatever T is
    }
  };
  one_ulp_bound(Eigen::half(), 11, 7000);
  one_ulp_bound(Eigen::bfloat16(), 8, 9000);
}

TEST_CASE("strided and reversed views give the contiguous result", "[attention]") {
  // q is read from a [B, H, S, D] (head-major) buffer with every other element of D, k with a
  // negative sequence stride over a reversed copy, out written head-major with padding.
  const Shape s{2, 37, 53, 2, 2, 12, 12};
  const auto q = random_values<float>(s.q_size(), 1);
  const auto k = random_values<float>(s.k_size(), 2);
  const auto v = random_values<float>(s.v_size(), 3);
  alibi::Params p;
  p.causal = false;
  p.window_left = 20;
  std::vector<float> expected(s.out_size());
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, expected.data()), p);

  const index_t B = s.batch, Sq = s.seq_q, Sk = s.seq_k, H = s.heads_q, D = s.head_dim;
  std::vector<float> q_bhsd(std::size_t(B * H * Sq * D * 2));
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < Sq; ++i)
      for (index_t h = 0; h < H; ++h)
        for (index_t d = 0; d < D; ++d)
          q_bhsd[std::size_t((((b * H + h) * Sq + i) * D + d) * 2)] =
              q[std::size_t(((b * Sq + i) * H + h) * D + d)];
  std::vector<float> k_reversed(k.size());
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Sk; ++t)
      std::memcpy(&k_reversed[std::size_t((b * Sk + (Sk - 1 - t)) * H * D)],
                  &k[std::size_t((b * Sk + t) * H * D)], sizeof(float) * std::size_t(H * D));
  const index_t out_row = D + 3;  // padded rows
  std::vector<float> out_padded(std::size_t(B * H * Sq * out_row), 99.0f);

  const auto qs = alibi::make_view<const float>(q_bhsd.data(), {B, Sq, H, D},
                                                {H * Sq * D * 2, D * 2, Sq * D * 2, 2});
  const auto ks = alibi::make_view<const float>(k_reversed.data() + (Sk - 1) * H * D, {B, Sk, H, D},
                                                {Sk * H * D, -H * D, D, 1});
  const auto os = alibi::make_view(out_padded.data(), {B, Sq, H, D},
                                   {H * Sq * out_row, out_row, Sq * out_row, 1});
  alibi::attention(qs, ks, v_view(s, v.data()), os, p);
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < Sq; ++i)
      for (index_t h = 0; h < H; ++h) {
        for (index_t d = 0; d < D; ++d)
          REQUIRE(os(b, i, h, d) ==
                  Approx(expected[std::size_t(((b * Sq + i) * H + h) * D + d)]).margin(1e-6));
        for (index_t d = D; d < out_row; ++d)  // padding untouched
          REQUIRE(out_padded[std::size_t(((b * H + h) * Sq + i) * out_row + d)] == 99.0f);
      }
}

TEST_CASE("the result is bitwise identical for any thread count", "[attention][threads]") {
  const Shape s{2, 300, 300, 3, 1, 16, 16};
  const auto q = random_values<float>(s.q_size(), 11);
  const auto k = random_values<float>(s.k_size(), 12);
  const auto v = random_values<float>(s.v_size(), 13);
  std::vector<std::vector<float>> outs, lses;
  for (int threads : {1, 2, 3, 0}) {
    alibi::Params p;
    p.num_threads = threads;
    outs.emplace_back(s.out_size());
    lses.emplace_back(s.lse_size());
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, outs.back().data()), p, lses.back().data());
  }
  for (std::size_t i = 1; i < outs.size(); ++i) {
    CHECK(std::memcmp(outs[i].data(), outs[0].data(), outs[0].size() * sizeof(float)) == 0);
    CHECK(std::memcmp(lses[i].data(), lses[0].data(), lses[0].size() * sizeof(float)) == 0);
  }
}

TEST_CASE("rows with no allowed key give exactly 0 and -inf", "[attention]") {
  // Causal with Sq > Sk and bottom-right alignment: the first Sq - Sk queries precede every key.
  const Shape s{1, 150, 20, 2, 2, 4, 4};
  const auto q = random_values<float>(s.q_size(), 5);
  const auto k = random_values<float>(s.k_size(), 6);
  const auto v = random_values<float>(s.v_size(), 7);
  const Both<float> r = run_both(s, q, k, v, alibi::Params{});
  for (index_t h = 0; h < s.heads_q; ++h)
    for (index_t i = 0; i < s.seq_q; ++i) {
      const bool empty = i < s.seq_q - s.seq_k;
      const float lse = r.lse[std::size_t(h * s.seq_q + i)];
      CHECK((lse == -std::numeric_limits<float>::infinity()) == empty);
      for (index_t d = 0; d < s.value_dim; ++d)
        if (empty) CHECK(r.out[std::size_t((i * s.heads_q + h) * s.value_dim + d)] == 0.0f);
    }
}

TEST_CASE("NaN in the inputs reaches exactly the rows that read it", "[attention]") {
  // 80 x 80 takes the prefill tiles; 8 queries (the last 8 positions) of head_dim 16 the decode
  // walk. Causal: key t is read by the queries at positions t and after.
  for (const Shape& s : {Shape{1, 80, 80, 1, 1, 8, 8}, Shape{1, 8, 80, 1, 1, 16, 16}}) {
    INFO("Sq " << s.seq_q << ", D " << s.head_dim);
    auto q = random_values<float>(s.q_size(), 21);
    auto k = random_values<float>(s.k_size(), 22);
    const auto v = random_values<float>(s.v_size(), 23);
    const index_t first = s.seq_k - s.seq_q;  // position of query 0
    const index_t bad_query = s.seq_q / 8, bad_key = first + s.seq_q * 5 / 8;
    q[std::size_t(bad_query * s.head_dim)] = std::nanf("");
    k[std::size_t(bad_key * s.head_dim + 3)] = std::nanf("");
    std::vector<float> out(s.out_size());
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, out.data()));
    for (index_t i = 0; i < s.seq_q; ++i) {
      const bool poisoned = i == bad_query || first + i >= bad_key;
      INFO("query " << i);
      CHECK(std::isnan(out[std::size_t(i * s.value_dim)]) == poisoned);
    }
  }
}

TEST_CASE("masked keys weigh exactly zero", "[attention]") {
  // A huge value at a key beyond the causal edge: any nonzero weight for it (vectorised exp of
  // -inf is not 0 unless forced) shows up in the earlier rows that share its key tile. Prefill
  // tiles (80 x 80) and the decode walk (8 queries, head_dim 16).
  for (const Shape& s : {Shape{1, 80, 80, 1, 1, 8, 8}, Shape{1, 8, 80, 1, 1, 16, 16}}) {
    INFO("Sq " << s.seq_q << ", D " << s.head_dim);
    const auto q = random_values<float>(s.q_size(), 31);
    const auto k = random_values<float>(s.k_size(), 32);
    auto v = random_values<float>(s.v_size(), 33);
    const index_t first = s.seq_k - s.seq_q, huge_key = first + s.seq_q * 3 / 4;
    v[std::size_t(huge_key * s.value_dim)] = 3e38f;
    const Both<float> r = run_both(s, q, k, v, alibi::Params{});
    for (index_t i = 0; first + i < huge_key; ++i)
      for (index_t d = 0; d < s.value_dim; ++d) {
        INFO("query " << i << ", d " << d);
        REQUIRE(r.out[std::size_t(i * s.value_dim + d)] ==
                Approx(r.ref[std::size_t(i * s.value_dim + d)]).margin(float_tolerance));
      }
  }
}

TEST_CASE("keys beyond seqlens_k are never read", "[attention]") {
  // The unwritten tail of a KV cache may hold anything, NaN included. Sk is past the size at which
  // the tail skip measures key norms (the measurement must skip the tail too).
  const Shape s{2, 3, 2000, 2, 2, 8, 8};
  alibi::Params p;
  p.seqlens_k = {700, 1310};
  const auto q = random_values<float>(s.q_size(), 41);
  auto k = random_values<float>(s.k_size(), 42);
  auto v = random_values<float>(s.v_size(), 43);
  for (index_t b = 0; b < s.batch; ++b)
    for (index_t t = p.seqlens_k[std::size_t(b)]; t < s.seq_k; ++t)
      for (index_t j = 0; j < s.heads_kv * s.head_dim; ++j) {
        k[std::size_t((b * s.seq_k + t) * s.heads_kv * s.head_dim + j)] = std::nanf("");
        v[std::size_t((b * s.seq_k + t) * s.heads_kv * s.value_dim + j)] = std::nanf("");
      }
  const Both<float> r = run_both(s, q, k, v, p);
  for (std::size_t i = 0; i < r.out.size(); ++i)
    REQUIRE(r.out[i] == Approx(r.ref[i]).margin(float_tolerance));
}
