// Element-exact overlap checks (detail/overlap.hpp): interleaved, transposed and negative-stride
// views that share no element pass; views that share one are refused before anything is
// written. Against brute force on small random views, and through the public entry points.
#include "test_support.hpp"

#include <set>

#include <catch2/catch.hpp>

using namespace alibi_test;
using alibi::detail::ByteLattice;

namespace {

std::set<std::uintptr_t> bytes_of(const ByteLattice& l) {
  std::set<std::uintptr_t> bytes;
  for (index_t i = 0; i < l.extents[0]; ++i)
    for (index_t j = 0; j < l.extents[1]; ++j)
      for (index_t k = 0; k < l.extents[2]; ++k)
        for (index_t m = 0; m < l.extents[3]; ++m) {
          const std::uintptr_t start = l.base + std::uintptr_t(i * l.strides[0] + j * l.strides[1] +
                                                               k * l.strides[2] + m * l.strides[3]);
          for (index_t b = 0; b < l.element_bytes; ++b) bytes.insert(start + std::uintptr_t(b));
        }
  return bytes;
}

ByteLattice random_lattice(std::mt19937& rng, std::uintptr_t base, index_t element_bytes) {
  std::uniform_int_distribution<index_t> extent(1, 5), stride(-9, 9);
  ByteLattice l;
  l.base = base;
  l.element_bytes = element_bytes;
  for (int i = 0; i < 4; ++i) {
    l.extents[i] = extent(rng);
    l.strides[i] = l.extents[i] == 1 ? 0 : stride(rng) * element_bytes;
  }
  return l;
}

}  // namespace

TEST_CASE("duplicate elements are found exactly, against brute force", "[overlap]") {
  std::mt19937 rng(401);
  int duplicates = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    const ByteLattice l = random_lattice(rng, 1 << 20, 4);
    std::set<std::uintptr_t> starts;
    bool brute = false;
    for (index_t i = 0; i < l.extents[0] && !brute; ++i)
      for (index_t j = 0; j < l.extents[1] && !brute; ++j)
        for (index_t k = 0; k < l.extents[2] && !brute; ++k)
          for (index_t m = 0; m < l.extents[3] && !brute; ++m)
            brute = !starts
                         .insert(l.base + std::uintptr_t(i * l.strides[0] + j * l.strides[1] +
                                                         k * l.strides[2] + m * l.strides[3]))
                         .second;
    INFO("trial " << trial);
    REQUIRE(alibi::detail::has_duplicate_elements(l) == brute);
    duplicates += brute;
  }
  CHECK(duplicates > 100);  // both answers occur
  CHECK(duplicates < 3900);
}

TEST_CASE("shared bytes are found exactly, against brute force", "[overlap]") {
  std::mt19937 rng(402);
  std::uniform_int_distribution<int> shift(-60, 60);
  int shared = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    // Mixed element sizes and misaligned bases: bytes, not elements, must not meet.
    const index_t size_a = trial % 2 ? 4 : 8, size_b = trial % 3 ? 4 : 2;
    const ByteLattice a = random_lattice(rng, 1 << 20, size_a);
    const ByteLattice b = random_lattice(rng, std::uintptr_t((1 << 20) + shift(rng)), size_b);
    const auto x = bytes_of(a), y = bytes_of(b);
    bool brute = false;
    for (std::uintptr_t byte : y) brute = brute || x.count(byte) > 0;
    INFO("trial " << trial);
    REQUIRE(alibi::detail::share_bytes(a, b) == brute);
    shared += brute;
  }
  CHECK(shared > 100);
  CHECK(shared < 3900);
}

TEST_CASE("q, k, v and out in the slots of one packed [B, S, 4, H, D] buffer", "[overlap]") {
  // Before: an address-range test refused out interleaved with q, k and v.
  const index_t B = 2, S = 40, H = 2, D = 8, row = 4 * H * D;
  auto packed = random_values<float>(std::size_t(B * S * row), 411);
  const std::array<index_t, 4> shape{B, S, H, D}, strides{S * row, row, D, 1};
  const auto slot = [&](int i) { return packed.data() + i * H * D; };
  const Shape s{B, S, S, H, H, D, D};
  std::vector<float> q(s.q_size()), k(s.k_size()), v(s.v_size());
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < S; ++t)
      for (index_t i = 0; i < H * D; ++i) {
        const std::size_t at = std::size_t((b * S + t) * H * D + i);
        q[at] = slot(0)[b * S * row + t * row + i];
        k[at] = slot(1)[b * S * row + t * row + i];
        v[at] = slot(2)[b * S * row + t * row + i];
      }
  alibi::Params p;
  float* out = slot(3);
  REQUIRE_NOTHROW(alibi::attention(alibi::make_view<const float>(slot(0), shape, strides),
                                   alibi::make_view<const float>(slot(1), shape, strides),
                                   alibi::make_view<const float>(slot(2), shape, strides),
                                   alibi::make_view(out, shape, strides), p));
  const Expected e = oracle(s, q, k, v, p);
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < S; ++t)
      for (index_t i = 0; i < H * D; ++i) {
        REQUIRE(out[b * S * row + t * row + i] ==
                Approx(e.out[std::size_t((b * S + t) * H * D + i)]).margin(1e-6));
        // The input slots are untouched.
        REQUIRE(slot(0)[b * S * row + t * row + i] == q[std::size_t((b * S + t) * H * D + i)]);
      }
  // Shifted by one element, out shares elements with v: refused, nothing written.
  const std::vector<float> before = packed;
  CHECK_THROWS_WITH(alibi::attention(alibi::make_view<const float>(slot(0), shape, strides),
                                     alibi::make_view<const float>(slot(1), shape, strides),
                                     alibi::make_view<const float>(slot(2), shape, strides),
                                     alibi::make_view(out - 1, shape, strides), p),
                    Catch::Contains("out [2, 40, 2, 8] overlaps v"));
  CHECK(packed == before);
}

TEST_CASE("dq, dk, dv interleaved in one packed gradient, and views that never coincide",
          "[overlap][backward]") {
  const index_t B = 1, S = 20, H = 2, D = 4, row = 3 * H * D;
  const Shape s{B, S, S, H, H, D, D};
  const auto q = random_values<float>(s.q_size(), 421), k = random_values<float>(s.k_size(), 422),
             v = random_values<float>(s.v_size(), 423),
             dout = random_values<float>(s.out_size(), 424);
  std::vector<float> out(s.out_size()), lse(s.lse_size());
  const alibi::TensorView<const float> qv = q_view(s, q.data()), kv = k_view(s, k.data()),
                                       vv = v_view(s, v.data());
  alibi::attention(qv, kv, vv, out_view(s, out.data()), {}, lse.data());
  std::vector<float> grads(std::size_t(B * S * row), 7.0f), rq(q.size()), rk(k.size()),
      rv(v.size());
  const std::array<index_t, 4> shape{B, S, H, D}, strides{S * row, row, D, 1};
  REQUIRE_NOTHROW(
      alibi::attention_backward(qv, kv, vv, out_view(s, out.data()), out_view(s, dout.data()),
                                lse.data(), alibi::make_view(grads.data(), shape, strides),
                                alibi::make_view(grads.data() + H * D, shape, strides),
                                alibi::make_view(grads.data() + 2 * H * D, shape, strides)));
  alibi::reference::attention_backward(qv, kv, vv, out_view(s, out.data()),
                                       out_view(s, dout.data()), lse.data(), q_view(s, rq.data()),
                                       k_view(s, rk.data()), v_view(s, rv.data()));
  for (index_t t = 0; t < S; ++t)
    for (index_t i = 0; i < H * D; ++i) {
      const std::size_t at = std::size_t(t * H * D + i);
      REQUIRE(grads[std::size_t(t * row + i)] == Approx(rq[at]).margin(1e-5));
      REQUIRE(grads[std::size_t(t * row + H * D + i)] == Approx(rk[at]).margin(1e-5));
      REQUIRE(grads[std::size_t(t * row + 2 * H * D + i)] == Approx(rv[at]).margin(1e-5));
    }

  // The fuzzer's view: [2, 1, 16, 1] with strides [6, 7, 5, 2]; 6 b + 5 h never coincide for
  // b < 2, h < 16 (the old sorted-stride test refused it).
  const Shape small{2, 1, 3, 16, 16, 1, 1};
  const auto sq = random_values<float>(small.q_size(), 425),
             sk = random_values<float>(small.k_size(), 426),
             sv = random_values<float>(small.v_size(), 427);
  std::vector<float> odd(200, 7.0f);
  const auto odd_view = alibi::make_view(odd.data(), {2, 1, 16, 1}, {6, 7, 5, 2});
  REQUIRE_NOTHROW(alibi::attention(q_view(small, sq.data()), k_view(small, sk.data()),
                                   v_view(small, sv.data()), odd_view));
  const Expected e = oracle(small, sq, sk, sv, alibi::Params{});
  for (index_t b = 0; b < 2; ++b)
    for (index_t h = 0; h < 16; ++h)
      CHECK(odd_view(b, 0, h, 0) == Approx(e.out[std::size_t(b * 16 + h)]).margin(1e-6));

  // Negative strides: out written in reversed positions.
  const Shape rev{1, 30, 30, 2, 2, 8, 8};
  const auto rq2 = random_values<float>(rev.q_size(), 428),
             rk2 = random_values<float>(rev.k_size(), 429),
             rv2 = random_values<float>(rev.v_size(), 430);
  std::vector<float> reversed(rev.out_size());
  const auto reversed_view =
      alibi::make_view(reversed.data() + (rev.seq_q - 1) * 16, {1, 30, 2, 8}, {30 * 16, -16, 8, 1});
  REQUIRE_NOTHROW(alibi::attention(q_view(rev, rq2.data()), k_view(rev, rk2.data()),
                                   v_view(rev, rv2.data()), reversed_view));
  const Expected er = oracle(rev, rq2, rk2, rv2, alibi::Params{});
  for (index_t i = 0; i < 30; ++i)
    for (index_t d = 0; d < 16; ++d)
      REQUIRE(reversed[std::size_t((29 - i) * 16 + d)] ==
              Approx(er.out[std::size_t(i * 16 + d)]).margin(1e-6));
}

TEST_CASE("merge refuses out over lse_a, and lse over out_a", "[overlap][merge]") {
  // Before: out was not checked against lse_a and lse_b.
  const Shape s{1, 4, 1, 2, 2, 2, 2};  // 8 rows of 2 values, 8 lse floats
  std::vector<float> buffer(64, 7.0f), b(16, 1.0f), lb(8, 0.0f), out(16, 7.0f), lse(8, 7.0f);
  float* a = buffer.data() + 8;    // floats 8..24
  float* la = buffer.data() + 24;  // floats 24..32
  // out_a and lse_a in one buffer, fine; out over lse_a is not.
  CHECK_NOTHROW(alibi::merge(out_view(s, a), la, out_view(s, b.data()), lb.data(),
                             out_view(s, out.data()), lse.data()));
  std::fill(buffer.begin(), buffer.end(), 7.0f);
  CHECK_THROWS_WITH(alibi::merge(out_view(s, a), la, out_view(s, b.data()), lb.data(),
                                 out_view(s, buffer.data() + 26), lse.data()),
                    Catch::Contains("overlaps lse_a or lse_b"));
  CHECK_THROWS_WITH(alibi::merge(out_view(s, a), la, out_view(s, b.data()), lb.data(),
                                 out_view(s, out.data()), a + 3),
                    Catch::Contains("lse [8 floats] overlaps"));
  for (float x : buffer) CHECK(x == 7.0f);
}

TEST_CASE("sizes and strides that overflow are refused", "[overlap][validation]") {
  // slopes for the largest int head count: closest_power * 2 overflowed (and looped forever).
  const float m = alibi::slope(2147483646, 2147483647);
  CHECK(m > 0.0f);
  CHECK(m <= 1.0f);
  // batch x heads beyond memory with an empty sequence: no element, but lse rows overflow.
  std::vector<float> x(8, 1.0f), out(8, 7.0f);
  const index_t huge = index_t(1) << 40;
  alibi::Params p;
  p.slopes = {0.5f};
  CHECK_THROWS_WITH(
      alibi::attention(alibi::make_view<const float>(x.data(), {huge, 0, huge, 1}, {0, 0, 1, 1}),
                       alibi::make_view<const float>(x.data(), {huge, 1, 1, 1}, {0, 1, 1, 1}),
                       alibi::make_view<const float>(x.data(), {huge, 1, 1, 1}, {0, 1, 1, 1}),
                       alibi::make_view(out.data(), {huge, 0, huge, 1}, {0, 0, 1, 1}), p),
      Catch::Contains("query heads is more than memory can hold"));
  // A stride of a one-element dimension near the int64 limit (UBSan: v.strides[1] * sizeof(T)
  // overflowed in the value tile).
  const Shape s{1, 1, 1, 1, 1, 4, 4};
  auto bad_v = alibi::make_view<const float>(x.data(), {1, 1, 1, 4}, {4, 1, 4, 1});
  bad_v.strides[1] = std::numeric_limits<index_t>::max() / 2;
  CHECK_THROWS_WITH(
      alibi::attention(q_view<const float>(s, x.data()), k_view<const float>(s, x.data()), bad_v,
                       out_view(s, out.data())),
      Catch::Contains("v strides overflow"));
  for (float o : out) CHECK(o == 7.0f);
}
