// alibi::attention_varlen and attention_varlen_backward, packed sequences: against the
// reference run on each sequence alone (reference::attention_varlen) and against alibi::attention
// called per sequence; keys of other sequences are never attended (NaN there changes nothing);
// bad offsets throw before anything is written.
#include "test_support.hpp"

#include <alibi/varlen.hpp>

#include <catch2/catch.hpp>

#include <stdexcept>

using namespace alibi_test;

namespace {

/// Packed sequences: q [1, total_q, Hq, D], k/v [1, total_k, Hkv, D].
struct Packed {
  std::vector<index_t> cu_q, cu_k;
  index_t heads_q, heads_kv, dim, value_dim;
  std::vector<float> q, k, v;

  Packed(const std::vector<index_t>& lens_q, const std::vector<index_t>& lens_k, index_t hq,
         index_t hkv, index_t d, index_t dv, std::uint32_t seed)
      : cu_q{0}, cu_k{0}, heads_q(hq), heads_kv(hkv), dim(d), value_dim(dv) {
    for (index_t n : lens_q) cu_q.push_back(cu_q.back() + n);
    for (index_t n : lens_k) cu_k.push_back(cu_k.back() + n);
    q = random_values<float>(std::size_t(total_q() * hq * d), seed, 2.0f);
    k = random_values<float>(std::size_t(total_k() * hkv * d), seed + 1, 2.0f);
    v = random_values<float>(std::size_t(total_k() * hkv * dv), seed + 2);
  }
  index_t total_q() const { return cu_q.back(); }
  index_t total_k() const { return cu_k.back(); }
  alibi::TensorView<const float> qv() const {
    return alibi::make_view(q.data(), 1, total_q(), heads_q, dim);
  }
  alibi::TensorView<const float> kv() const {
    return alibi::make_view(k.data(), 1, total_k(), heads_kv, dim);
  }
  alibi::TensorView<const float> vv() const {
    return alibi::make_view(v.data(), 1, total_k(), heads_kv, value_dim);
  }
  template <class T>
  alibi::TensorView<T> out_view(T* data) const {
    return alibi::make_view(data, 1, total_q(), heads_q, value_dim);
  }
  std::size_t out_size() const { return std::size_t(total_q() * heads_q * value_dim); }
  std::size_t lse_size() const { return std::size_t(heads_q * total_q()); }
};

void require_close(const std::vector<float>& got, const std::vector<float>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("index " << i);
    if (std::isinf(want[i])) {
      REQUIRE(got[i] == want[i]);
    } else {
      REQUIRE(double(got[i]) == Approx(double(want[i])).epsilon(tol).margin(tol));
    }
  }
}

/// The packed kernel against the per-sequence reference, and against alibi::attention called on
/// each sequence alone.
void check_forward(const Packed& x, const alibi::Params& params) {
  std::vector<float> out(x.out_size(), -7.0f), lse(x.lse_size(), -7.0f);
  std::vector<float> ref(x.out_size(), -7.0f), ref_lse(x.lse_size(), -7.0f);
  alibi::attention_varlen(x.qv(), x.kv(), x.vv(), x.cu_q, x.cu_k, x.out_view(out.data()), params,
                          lse.data());
  alibi::reference::attention_varlen(x.qv(), x.kv(), x.vv(), x.cu_q, x.cu_k,
                                     x.out_view(ref.data()), params, ref_lse.data());
  require_close(out, ref, 2e-5);
  require_close(lse, ref_lse, 2e-5);

  // Per sequence through the ordinary call.
  std::vector<float> each(x.out_size(), -7.0f), each_lse(x.lse_size(), -7.0f);
  for (std::size_t s = 0; s + 1 < x.cu_q.size(); ++s) {
    const index_t q0 = x.cu_q[s], nq = x.cu_q[s + 1] - q0, k0 = x.cu_k[s],
                  nk = x.cu_k[s + 1] - k0;
    std::vector<float> part(std::size_t(x.heads_q * nq));
    alibi::attention(
        alibi::make_view(x.q.data() + q0 * x.heads_q * x.dim, 1, nq, x.heads_q, x.dim),
        alibi::make_view(x.k.data() + k0 * x.heads_kv * x.dim, 1, nk, x.heads_kv, x.dim),
        alibi::make_view(x.v.data() + k0 * x.heads_kv * x.value_dim, 1, nk, x.heads_kv,
                         x.value_dim),
        alibi::make_view(each.data() + q0 * x.heads_q * x.value_dim, 1, nq, x.heads_q,
                         x.value_dim),
        params, part.data());
    for (index_t h = 0; h < x.heads_q; ++h)
      for (index_t i = 0; i < nq; ++i)
        each_lse[std::size_t(h * x.total_q() + q0 + i)] = part[std::size_t(h * nq + i)];
  }
  require_close(out, each, 2e-5);
  require_close(lse, each_lse, 2e-5);
}

}  // namespace

TEST_CASE("attention_varlen: packed documents match each document alone", "[varlen]") {
  alibi::Params p;
  SECTION("causal self-attention, GQA, lengths around the tiles") {
    check_forward(Packed({300, 170, 1, 64, 129}, {300, 170, 1, 64, 129}, 8, 2, 16, 16, 1), p);
  }
  SECTION("bidirectional (an encoder batch), window both sides") {
    p.causal = false;
    check_forward(Packed({50, 23, 1, 77}, {50, 23, 1, 77}, 4, 4, 8, 8, 2), p);
    p.window_left = 5;
    p.window_right = 9;
    check_forward(Packed({50, 23, 1, 77}, {50, 23, 1, 77}, 4, 4, 8, 8, 3), p);
  }
  SECTION("chunked prefill: fewer queries than keys, empty sequences, more queries than keys") {
    check_forward(Packed({20, 0, 5, 30, 7}, {150, 40, 0, 10, 7}, 4, 2, 8, 12, 4), p);
  }
  SECTION("sliding window and explicit slopes and scale") {
    p.window_left = 13;
    p.slopes = {0.5f, 0.0f, 0.03f, 1.0f};
    p.scale = 0.3f;
    check_forward(Packed({90, 200, 3}, {90, 200, 3}, 4, 1, 16, 16, 5), p);
  }
  SECTION("without the tail skip") {
    p.tail_tolerance = 0;
    check_forward(Packed({300, 170}, {300, 170}, 2, 2, 16, 16, 6), p);
  }
  SECTION("decode steps of several sequences against long keys (the split-KV path)") {
    check_forward(Packed({1, 2, 1}, {20000, 500, 17000}, 2, 1, 16, 16, 7), p);
  }
}

TEST_CASE("attention_varlen: keys of other sequences are never attended", "[varlen]") {
  // NaN in sequence 1's keys and values: sequences 0 and 2 must stay finite.
  Packed x({40, 30, 50}, {40, 30, 50}, 2, 2, 8, 8, 8);
  for (index_t t = x.cu_k[1]; t < x.cu_k[2]; ++t)
    for (index_t j = 0; j < x.heads_kv * x.dim; ++j) {
      x.k[std::size_t(t * x.heads_kv * x.dim + j)] = std::numeric_limits<float>::quiet_NaN();
      x.v[std::size_t(t * x.heads_kv * x.dim + j)] = std::numeric_limits<float>::quiet_NaN();
    }
  for (bool causal : {true, false}) {
    alibi::Params p;
    p.causal = causal;
    std::vector<float> out(x.out_size());
    alibi::attention_varlen(x.qv(), x.kv(), x.vv(), x.cu_q, x.cu_k, x.out_view(out.data()), p);
    for (index_t i = 0; i < x.total_q(); ++i)
      for (index_t j = 0; j < x.heads_q * x.value_dim; ++j) {
        const bool inside = i >= x.cu_q[1] && i < x.cu_q[2];
        REQUIRE(std::isnan(out[std::size_t(i * x.heads_q * x.value_dim + j)]) == inside);
      }
  }
}

TEST_CASE("attention_varlen: the result is bitwise the same for any thread count",
          "[varlen][threads]") {
  const Packed x({300, 170, 9}, {300, 170, 9}, 4, 2, 16, 16, 9);
  alibi::Params p;
  std::vector<float> a(x.out_size()), b(x.out_size());
  p.num_threads = 1;
  alibi::attention_varlen(x.qv(), x.kv(), x.vv(), x.cu_q, x.cu_k, x.out_view(a.data()), p);
  p.num_threads = 3;
  alibi::attention_varlen(x.qv(), x.kv(), x.vv(), x.cu_q, x.cu_k, x.out_view(b.data()), p);
  REQUIRE(a == b);
}

TEST_CASE("attention_varlen_backward: gradients match each sequence alone", "[varlen][backward]") {
  const auto check = [](const Packed& x, const alibi::Params& p) {
    std::vector<float> out(x.out_size()), lse(x.lse_size());
    alibi::attention_varlen(x.qv(), x.kv(), x.vv(), x.cu_q, x.cu_k, x.out_view(out.data()), p,
                            lse.data());
    const std::vector<float> dout = random_values<float>(x.out_size(), 99);
    const auto grads = [&](auto&& backward) {
      std::vector<float> dq(x.q.size(), 5.0f), dk(x.k.size(), 5.0f), dv(x.v.size(), 5.0f);
      std::vector<float> ds(std::size_t(x.heads_q), 5.0f);
      backward(x.qv(), x.kv(), x.vv(), x.out_view(out.data()), x.out_view(dout.data()),
               lse.data(), x.cu_q, x.cu_k,
               alibi::make_view(dq.data(), 1, x.total_q(), x.heads_q, x.dim),
               alibi::make_view(dk.data(), 1, x.total_k(), x.heads_kv, x.dim),
               alibi::make_view(dv.data(), 1, x.total_k(), x.heads_kv, x.value_dim), p,
               ds.data());
      return std::vector<std::vector<float>>{dq, dk, dv, ds};
    };
    const auto got = grads([](auto&&... a) { alibi::attention_varlen_backward<float>(a...); });
    const auto want =
        grads([](auto&&... a) { alibi::reference::attention_varlen_backward<float>(a...); });
    for (int i = 0; i < 3; ++i) {
      INFO("gradient " << "q k v"[2 * i]);
      require_close(got[std::size_t(i)], want[std::size_t(i)], 3e-5);
    }
    INFO("dslopes");
    require_close(got[3], want[3], 1e-4);
  };
  alibi::Params p;
  SECTION("causal, GQA") { check(Packed({100, 37, 1, 64}, {100, 37, 1, 64}, 4, 2, 16, 16, 10), p); }
  SECTION("bidirectional, fewer queries than keys, an empty sequence") {
    p.causal = false;
    check(Packed({20, 0, 33}, {70, 5, 33}, 2, 1, 8, 8, 11), p);
  }
}

TEST_CASE("attention_varlen: bad offsets and params throw, naming them, before any write",
          "[varlen][validation]") {
  const Packed x({4, 6}, {4, 6}, 2, 2, 8, 8, 12);
  std::vector<float> out(x.out_size(), 9.0f), lse(x.lse_size(), 9.0f);
  const auto call = [&](std::vector<index_t> cu_q, std::vector<index_t> cu_k,
                        alibi::Params p = {}) {
    alibi::attention_varlen(x.qv(), x.kv(), x.vv(), cu_q, cu_k, x.out_view(out.data()), p,
                            lse.data());
  };
  using Catch::Contains;
  REQUIRE_THROWS_WITH(call({0, 4}, {0, 4, 10}), Contains("cu_seqlens_q ends at 4 but q holds 10"));
  REQUIRE_THROWS_WITH(call({0, 4, 10}, {0, 10}), Contains("cu_seqlens_k has 2 offsets"));
  REQUIRE_THROWS_WITH(call({1, 4, 10}, {0, 4, 10}), Contains("cu_seqlens_q[0] = 1 must be 0"));
  REQUIRE_THROWS_WITH(call({0, 6, 4, 10}, {0, 4, 4, 10}), Contains("cu_seqlens_q decreases at 2"));
  REQUIRE_THROWS_WITH(call({0, 4, 11}, {0, 4, 10}), Contains("cu_seqlens_q ends at 11"));
  REQUIRE_THROWS_WITH(call({0, 4, 10}, {0, 4, 12}), Contains("cu_seqlens_k ends at 12 but k"));
  REQUIRE_THROWS_WITH(call({}, {0}), Contains("cu_seqlens_q is empty"));
  alibi::Params offset;
  offset.query_offset = 3;
  REQUIRE_THROWS_WITH(call({0, 4, 10}, {0, 4, 10}, offset), Contains("query_offset"));
  alibi::Params ragged;
  ragged.seqlens_k = {10};
  REQUIRE_THROWS_WITH(call({0, 4, 10}, {0, 4, 10}, ragged), Contains("seqlens_k"));
  alibi::Params per_row;
  per_row.slopes = alibi::slopes(4);  // B * Hq: per sequence slopes are not supported
  REQUIRE_THROWS_WITH(call({0, 4, 10}, {0, 4, 10}, per_row), Contains("params.slopes has 4"));
  for (float v : out) REQUIRE(v == 9.0f);
  for (float v : lse) REQUIRE(v == 9.0f);
  // Batch other than 1.
  std::vector<float> q2(x.q.size()), out2(x.out_size());
  REQUIRE_THROWS_WITH(
      alibi::attention_varlen(alibi::make_view<const float>(q2.data(), 2, 5, 2, 8),
                              alibi::make_view<const float>(x.k.data(), 2, 5, 2, 8),
                              alibi::make_view<const float>(x.v.data(), 2, 5, 2, 8), {0, 5},
                              {0, 5}, alibi::make_view(out2.data(), 2, 5, 2, 8)),
      Contains("q has batch 2"));
  // The backward checks the same.
  std::vector<float> dq(x.q.size()), dk(x.k.size()), dv(x.v.size());
  REQUIRE_THROWS_WITH(
      alibi::attention_varlen_backward<float>(
          x.qv(), x.kv(), x.vv(), x.out_view(out.data()), x.out_view(out.data()), lse.data(),
          {0, 4, 10}, {0, 5, 4}, alibi::make_view(dq.data(), 1, 10, 2, 8),
          alibi::make_view(dk.data(), 1, 10, 2, 8), alibi::make_view(dv.data(), 1, 10, 2, 8)),
      Contains("cu_seqlens_k decreases"));
  for (float v : dq) REQUIRE(v == 0.0f);
}
