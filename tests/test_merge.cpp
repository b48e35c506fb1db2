// alibi::merge: attention over [0, n) equals the merge of attention over [0, a) and [a, n) with
// explicit positions, for causal, bidirectional and windowed cases; and its checks.
#include "test_support.hpp"

#include <catch2/catch.hpp>

using namespace alibi_test;

namespace {

/// Attention of all Sq queries (at explicit positions from query_offset) over keys [begin, end)
/// of a [B, Sk, H, D] buffer, the keys at their absolute positions.
struct Partial {
  std::vector<float> out, lse;
};

Partial attend(const Shape& s, const std::vector<float>& q, const std::vector<float>& k,
               const std::vector<float>& v, alibi::Params p, index_t begin, index_t end) {
  Partial r{std::vector<float>(s.out_size()), std::vector<float>(s.lse_size())};
  const index_t row = s.heads_kv * s.head_dim;
  const std::array<index_t, 4> strides{s.seq_k * row, row, s.head_dim, 1};
  p.key_offset = begin;
  alibi::attention(q_view(s, q.data()),
                   alibi::make_view(k.data() + begin * row,
                                    {s.batch, end - begin, s.heads_kv, s.head_dim}, strides),
                   alibi::make_view(v.data() + begin * row,
                                    {s.batch, end - begin, s.heads_kv, s.value_dim}, strides),
                   out_view(s, r.out.data()), p, r.lse.data());
  return r;
}

}  // namespace

TEST_CASE("attention over keys 0..n is the merge of 0..a and a..n", "[merge]") {
  const Shape s{2, 40, 700, 4, 2, 16, 16};
  const auto q = random_values<float>(s.q_size(), 121);
  const auto k = random_values<float>(s.k_size(), 122);
  const auto v = random_values<float>(s.v_size(), 123);
  struct Variant {
    const char* name;
    bool causal;
    index_t window_left, window_right;
  };
  for (const Variant& variant :
       {Variant{"causal", true, -1, -1}, Variant{"bidirectional", false, -1, -1},
        Variant{"causal window", true, 100, -1}, Variant{"two-sided window", false, 50, 30}}) {
    for (index_t a : {index_t(1), index_t(256), index_t(600), index_t(690)}) {
      INFO(variant.name << ", split at " << a);
      alibi::Params p;
      p.causal = variant.causal;
      p.window_left = variant.window_left;
      p.window_right = variant.window_right;
      p.query_offset = s.seq_k - s.seq_q;  // the bottom-right positions of the whole call
      // Against the float64 oracle over all keys, not alibi::attention itself.
      const Expected whole = oracle(s, q, k, v, p);
      Partial left = attend(s, q, k, v, p, 0, a);
      const Partial right = attend(s, q, k, v, p, a, s.seq_k);
      // Accumulate in place into the left partial, as a split-KV loop would.
      alibi::merge(out_view(s, left.out.data()), left.lse.data(), out_view(s, right.out.data()),
                   right.lse.data(), out_view(s, left.out.data()), left.lse.data());
      for (std::size_t i = 0; i < whole.out.size(); ++i)
        REQUIRE(left.out[i] == Approx(whole.out[i]).margin(2e-6));
      for (std::size_t i = 0; i < whole.lse.size(); ++i) {
        if (std::isinf(whole.lse[i]))
          REQUIRE(left.lse[i] == whole.lse[i]);
        else
          REQUIRE(left.lse[i] == Approx(whole.lse[i]).margin(2e-6));
      }
    }
  }
}

TEST_CASE("merge of two empty rows is an empty row, and NaN stays NaN", "[merge]") {
  const Shape s{1, 3, 1, 1, 1, 2, 2};
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> a{0, 0, 1, 2, 3, 4}, b{0, 0, 5, 6, 7, 8}, out(6, 9.0f);
  std::vector<float> la{-inf, -inf, 0.0f}, lb{-inf, 1.0f, std::nanf("")}, lse(3);
  alibi::merge(out_view(s, a.data()), la.data(), out_view(s, b.data()), lb.data(),
               out_view(s, out.data()), lse.data());
  CHECK(out[0] == 0.0f);
  CHECK(out[1] == 0.0f);
  CHECK(lse[0] == -inf);
  CHECK(out[2] == Approx(5.0f));  // only b has keys
  CHECK(out[3] == Approx(6.0f));
  CHECK(lse[1] == Approx(1.0f));
  CHECK(std::isnan(out[4]));
  CHECK(std::isnan(lse[2]));
}

TEST_CASE("merge rejects shapes that differ, null lse and partial overlaps",
          "[merge][validation]") {
  const Shape s{1, 4, 1, 2, 2, 3, 3};
  std::vector<float> a(24, 1.0f), b(24, 2.0f), out(24, 7.0f), la(8, 0.0f), lb(8, 0.0f),
      lse(8, 7.0f);
  const auto view = [&](std::vector<float>& x) { return out_view(s, x.data()); };
  const Shape wide{1, 4, 1, 2, 2, 3, 4};
  std::vector<float> c(32);
  CHECK_THROWS_WITH(
      alibi::merge(view(a), la.data(), out_view(wide, c.data()), lb.data(), view(out), lse.data()),
      Catch::Contains("out_b [1, 4, 2, 4]") && Catch::Contains("same shape"));
  CHECK_THROWS_WITH(alibi::merge(view(a), nullptr, view(b), lb.data(), view(out), lse.data()),
                    Catch::Contains("lse_a") && Catch::Contains("8 rows"));
  // out one element past the start of a: neither the same view nor disjoint.
  std::vector<float> shared(25, 1.0f);
  CHECK_THROWS_WITH(alibi::merge(out_view(s, shared.data()), la.data(), view(b), lb.data(),
                                 out_view(s, shared.data() + 1), lse.data()),
                    Catch::Contains("overlaps out_a or out_b"));
  CHECK(shared[24] == 1.0f);
  CHECK_THROWS_WITH(alibi::merge(view(a), la.data(), view(b), lb.data(), view(out), la.data() + 1),
                    Catch::Contains("lse [8 floats] overlaps"));
  for (float x : out) CHECK(x == 7.0f);
  for (float x : lse) CHECK(x == 7.0f);
}
