// Params::seqlens_q, right-padded ragged queries: each valid row of a padded batch against the
// reference run on that row alone (its own queries and keys, no padding, bottom-right), forward
// and backward; padding queries are never read (NaN there changes nothing) and get out 0, lse -inf.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <stdexcept>

using namespace alibi_test;

namespace {

constexpr float nan_value = std::numeric_limits<float>::quiet_NaN();

/// A right-padded batch: q [B, Sq, Hq, D], k/v [B, Sk, Hkv, D], rows valid up to lens_q / lens_k;
/// padding filled with NaN, so that reading it would show.
struct Padded {
  Shape s;
  std::vector<index_t> lens_q, lens_k;
  std::vector<float> q, k, v;

  Padded(Shape shape, std::vector<index_t> lq, std::vector<index_t> lk, std::uint32_t seed)
      : s(shape), lens_q(std::move(lq)), lens_k(std::move(lk)) {
    q = random_values<float>(s.q_size(), seed, 2.0f);
    k = random_values<float>(s.k_size(), seed + 1, 2.0f);
    v = random_values<float>(s.v_size(), seed + 2);
    for (index_t b = 0; b < s.batch; ++b) {
      for (index_t i = lens_q[b]; i < s.seq_q; ++i)
        for (index_t j = 0; j < s.heads_q * s.head_dim; ++j)
          q[std::size_t((b * s.seq_q + i) * s.heads_q * s.head_dim + j)] = nan_value;
      for (index_t t = lens_k[b]; t < s.seq_k; ++t) {
        for (index_t j = 0; j < s.heads_kv * s.head_dim; ++j)
          k[std::size_t((b * s.seq_k + t) * s.heads_kv * s.head_dim + j)] = nan_value;
        for (index_t j = 0; j < s.heads_kv * s.value_dim; ++j)
          v[std::size_t((b * s.seq_k + t) * s.heads_kv * s.value_dim + j)] = nan_value;
      }
    }
  }

  /// The first n rows of batch row b of a contiguous [B, S, H, D] tensor, as a batch of one.
  template <class T>
  static alibi::TensorView<T> row(T* data, index_t b, index_t seq, index_t n, index_t heads,
                                  index_t dim) {
    return alibi::make_view(data + b * seq * heads * dim, 1, n, heads, dim);
  }
};

/// Row b of the padded problem run alone through the reference: out [len_q, Hq, Dv], lse
/// [Hq, len_q].
struct RowResult {
  std::vector<float> out, lse;
};

RowResult reference_row(const Padded& x, index_t b, alibi::Params params) {
  const Shape& s = x.s;
  params.seqlens_k.clear();
  params.seqlens_q.clear();
  if (params.slopes.size() == std::size_t(s.batch * s.heads_q))
    params.slopes = std::vector<float>(params.slopes.begin() + b * s.heads_q,
                                       params.slopes.begin() + (b + 1) * s.heads_q);
  const index_t nq = x.lens_q[b], nk = x.lens_k[b];
  RowResult r{std::vector<float>(std::size_t(nq * s.heads_q * s.value_dim)),
              std::vector<float>(std::size_t(s.heads_q * nq))};
  alibi::reference::attention(
      Padded::row(x.q.data(), b, s.seq_q, nq, s.heads_q, s.head_dim),
      Padded::row(x.k.data(), b, s.seq_k, nk, s.heads_kv, s.head_dim),
      Padded::row(x.v.data(), b, s.seq_k, nk, s.heads_kv, s.value_dim),
      alibi::make_view(r.out.data(), 1, nq, s.heads_q, s.value_dim), params, r.lse.data());
  return r;
}

/// alibi::attention with seqlens_q = lens_q and seqlens_k = lens_k, against each row alone.
void check_rows(const Padded& x, alibi::Params params, double tolerance) {
  const Shape& s = x.s;
  params.seqlens_q = x.lens_q;
  params.seqlens_k = x.lens_k;
  std::vector<float> out(s.out_size(), -7.0f), lse(s.lse_size(), -7.0f);
  alibi::attention(q_view(s, x.q.data()), k_view(s, x.k.data()), v_view(s, x.v.data()),
                   out_view(s, out.data()), params, lse.data());
  for (index_t b = 0; b < s.batch; ++b) {
    INFO("batch row " << b << ", " << x.lens_q[b] << " queries, " << x.lens_k[b] << " keys");
    const RowResult want = reference_row(x, b, params);
    for (index_t i = 0; i < s.seq_q; ++i)
      for (index_t h = 0; h < s.heads_q; ++h) {
        INFO("query " << i << ", head " << h);
        const float got_lse = lse[std::size_t((b * s.heads_q + h) * s.seq_q + i)];
        for (index_t d = 0; d < s.value_dim; ++d) {
          const float got = out[std::size_t(((b * s.seq_q + i) * s.heads_q + h) * s.value_dim + d)];
          if (i >= x.lens_q[b]) {
            REQUIRE(got == 0.0f);
          } else {
            const float ref =
                want.out[std::size_t((i * s.heads_q + h) * s.value_dim + d)];
            REQUIRE(double(got) == Approx(double(ref)).margin(tolerance));
          }
        }
        if (i >= x.lens_q[b]) {
          REQUIRE(got_lse == -std::numeric_limits<float>::infinity());
        } else {
          const float ref = want.lse[std::size_t(h * x.lens_q[b] + i)];
          if (std::isinf(ref)) {
            REQUIRE(got_lse == ref);
          } else {
            REQUIRE(double(got_lse) == Approx(double(ref)).epsilon(tolerance).margin(tolerance));
          }
        }
      }
  }
}

}  // namespace

TEST_CASE("seqlens_q: a right-padded prefill of 300 and 170 tokens matches each prompt alone",
          "[seqlens_q]") {
  // The case of the issue: without seqlens_q the short row's real queries (at the top) would be
  // aligned to end at key 169 from row 130 on, and read padding.
  const Padded x({2, 300, 300, 4, 2, 16, 16}, {300, 170}, {300, 170}, 11);
  check_rows(x, {}, 2e-5);
  alibi::Params threads;
  threads.num_threads = 1;
  check_rows(x, threads, 2e-5);
}

TEST_CASE("seqlens_q: a padded encoder batch (bidirectional) matches each sequence alone",
          "[seqlens_q]") {
  alibi::Params p;
  p.causal = false;
  const Padded x({3, 50, 50, 4, 4, 8, 8}, {50, 23, 1}, {50, 23, 1}, 21);
  check_rows(x, p, 2e-5);
  SECTION("with a window and per-row slopes") {
    p.window_left = 7;
    p.window_right = 3;
    p.slopes = alibi::slopes(12);
    check_rows(x, p, 2e-5);
  }
}

TEST_CASE("seqlens_q: rows of different queries and keys, empty rows, GQA", "[seqlens_q]") {
  SECTION("chunked prefill, more keys than queries") {
    check_rows(Padded({3, 40, 130, 8, 2, 16, 8}, {40, 9, 0}, {130, 61, 30}, 31), {}, 2e-5);
  }
  SECTION("more queries than keys: leading rows see nothing") {
    check_rows(Padded({2, 30, 30, 2, 2, 8, 8}, {30, 25}, {10, 30}, 41), {}, 2e-5);
  }
  SECTION("a few draft tokens against long rows (the split-KV path)") {
    // 20000 keys: split into chunks of decode_chunk (16384) keys, merged per row.
    check_rows(Padded({2, 4, 20000, 2, 1, 16, 16}, {4, 1}, {20000, 300}, 51), {}, 2e-5);
  }
  SECTION("with query_offset: positions from there, padding still empty") {
    alibi::Params p;
    p.query_offset = 0;  // each row's queries at positions 0.., its keys at 0..
    const Padded x({2, 20, 20, 2, 2, 8, 8}, {20, 12}, {20, 12}, 61);
    check_rows(x, p, 2e-5);  // the same as bottom-right here: Sq = Sk in each row
  }
}

TEST_CASE("seqlens_q: gradients of a padded batch match each row alone; padding gets zero",
          "[seqlens_q][backward]") {
  const Padded x({2, 100, 100, 4, 2, 16, 16}, {100, 37}, {100, 37}, 71);
  const Shape& s = x.s;
  alibi::Params p;
  p.seqlens_q = x.lens_q;
  p.seqlens_k = x.lens_k;
  std::vector<float> out(s.out_size()), lse(s.lse_size());
  alibi::attention(q_view(s, x.q.data()), k_view(s, x.k.data()), v_view(s, x.v.data()),
                   out_view(s, out.data()), p, lse.data());
  std::vector<float> dout = random_values<float>(s.out_size(), 72);
  for (index_t i = x.lens_q[1]; i < s.seq_q; ++i)  // padding: NaN, never read
    for (index_t j = 0; j < s.heads_q * s.value_dim; ++j)
      dout[std::size_t((s.seq_q + i) * s.heads_q * s.value_dim + j)] = nan_value;
  std::vector<float> dq(s.q_size(), 5.0f), dk(s.k_size(), 5.0f), dv(s.v_size(), 5.0f);
  std::vector<float> dslopes(std::size_t(s.heads_q));
  alibi::attention_backward(q_view(s, x.q.data()), k_view(s, x.k.data()), v_view(s, x.v.data()),
                            out_view(s, out.data()), out_view(s, dout.data()), lse.data(),
                            q_view(s, dq.data()), k_view(s, dk.data()), v_view(s, dv.data()), p,
                            dslopes.data());
  std::vector<double> slope_sum(std::size_t(s.heads_q), 0.0);
  for (index_t b = 0; b < s.batch; ++b) {
    INFO("batch row " << b);
    const index_t nq = x.lens_q[b], nk = x.lens_k[b];
    const RowResult fwd = reference_row(x, b, {});
    std::vector<float> rq(std::size_t(nq * s.heads_q * s.head_dim)),
        rk(std::size_t(nk * s.heads_kv * s.head_dim)),
        rv(std::size_t(nk * s.heads_kv * s.value_dim)), rs(std::size_t(s.heads_q));
    const auto row_q = Padded::row(x.q.data(), b, s.seq_q, nq, s.heads_q, s.head_dim);
    const auto row_k = Padded::row(x.k.data(), b, s.seq_k, nk, s.heads_kv, s.head_dim);
    const auto row_v = Padded::row(x.v.data(), b, s.seq_k, nk, s.heads_kv, s.value_dim);
    alibi::reference::attention_backward<float>(
        row_q, row_k, row_v, alibi::make_view(fwd.out.data(), 1, nq, s.heads_q, s.value_dim),
        Padded::row(dout.data(), b, s.seq_q, nq, s.heads_q, s.value_dim), fwd.lse.data(),
        alibi::make_view(rq.data(), 1, nq, s.heads_q, s.head_dim),
        alibi::make_view(rk.data(), 1, nk, s.heads_kv, s.head_dim),
        alibi::make_view(rv.data(), 1, nk, s.heads_kv, s.value_dim), {}, rs.data());
    for (index_t h = 0; h < s.heads_q; ++h) slope_sum[std::size_t(h)] += rs[std::size_t(h)];
    for (index_t i = 0; i < s.seq_q; ++i)
      for (index_t j = 0; j < s.heads_q * s.head_dim; ++j) {
        const float got = dq[std::size_t((b * s.seq_q + i) * s.heads_q * s.head_dim + j)];
        REQUIRE(double(got) ==
                Approx(i < nq ? double(rq[std::size_t(i * s.heads_q * s.head_dim + j)]) : 0.0)
                    .margin(2e-5));
      }
    for (index_t t = 0; t < s.seq_k; ++t)
      for (index_t j = 0; j < s.heads_kv * s.head_dim; ++j) {
        const std::size_t at = std::size_t((b * s.seq_k + t) * s.heads_kv * s.head_dim + j);
        const std::size_t own = std::size_t(t * s.heads_kv * s.head_dim + j);
        REQUIRE(double(dk[at]) == Approx(t < nk ? double(rk[own]) : 0.0).margin(2e-5));
        REQUIRE(double(dv[at]) == Approx(t < nk ? double(rv[own]) : 0.0).margin(2e-5));
      }
  }
  for (index_t h = 0; h < s.heads_q; ++h)
    REQUIRE(double(dslopes[std::size_t(h)]) ==
            Approx(slope_sum[std::size_t(h)]).epsilon(1e-4).margin(1e-4));
}

TEST_CASE("seqlens_q: fill_bias leaves padding rows fully masked", "[seqlens_q][bias]") {
  alibi::Params p;
  p.seqlens_q = {4, 2};
  p.seqlens_k = {6, 3};
  std::vector<float> bias(2 * 1 * 4 * 6);
  p.slopes = {0.5f};
  alibi::fill_bias(bias.data(), 2, 1, 4, 6, p);
  const float minus_inf = -std::numeric_limits<float>::infinity();
  // Row 1: queries 0 and 1 at positions 1 and 2 (their last key is 2), causal.
  const float row1[4][6] = {{-0.5f, 0.0f, minus_inf, minus_inf, minus_inf, minus_inf},
                            {-1.0f, -0.5f, 0.0f, minus_inf, minus_inf, minus_inf},
                            {minus_inf, minus_inf, minus_inf, minus_inf, minus_inf, minus_inf},
                            {minus_inf, minus_inf, minus_inf, minus_inf, minus_inf, minus_inf}};
  for (int i = 0; i < 4; ++i)
    for (int t = 0; t < 6; ++t) REQUIRE(bias[std::size_t(24 + i * 6 + t)] == row1[i][t]);
  // Row 0 is the plain causal bias of 4 queries ending at key 5: query 0 at position 2.
  REQUIRE(bias[0 * 6 + 1] == -0.5f);
  REQUIRE(bias[0 * 6 + 3] == minus_inf);
  REQUIRE(bias[3 * 6 + 5] == 0.0f);
}

TEST_CASE("seqlens_q: bad values throw, naming seqlens_q and the sizes, before any write",
          "[seqlens_q][validation]") {
  const Shape s{2, 5, 7, 2, 2, 8, 8};
  const auto q = random_values<float>(s.q_size(), 1), k = random_values<float>(s.k_size(), 2),
             v = random_values<float>(s.v_size(), 3);
  std::vector<float> out(s.out_size(), 9.0f), lse(s.lse_size(), 9.0f);
  const auto call = [&](std::vector<index_t> lens) {
    alibi::Params p;
    p.seqlens_q = lens;
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, out.data()), p, lse.data());
  };
  REQUIRE_THROWS_WITH(call({5}), Catch::Contains("seqlens_q has 1 values but the batch is 2"));
  REQUIRE_THROWS_WITH(call({5, 6}), Catch::Contains("seqlens_q[1] = 6 is outside [0, 5]"));
  REQUIRE_THROWS_WITH(call({-1, 5}), Catch::Contains("seqlens_q[0] = -1"));
  REQUIRE_THROWS_AS(call({5, 6}), std::invalid_argument);
  for (float x : out) REQUIRE(x == 9.0f);
  for (float x : lse) REQUIRE(x == 9.0f);
}

TEST_CASE("seqlens_q over a paged cache: rows with different numbers of new tokens",
          "[seqlens_q][paged]") {
  // Two sequences of 100 and 40 tokens; this step checks 3 draft tokens of the first and 1 of
  // the second, q right-padded to 3 rows. Each row against the reference over read().
  const index_t hq = 4, hkv = 2, d = 16, sq = 3;
  alibi::PagedKVCache cache(alibi::PagedKVCache::Options{hkv, d});
  const std::vector<index_t> lengths = {100, 40}, lens_q = {3, 1};
  std::vector<alibi::SequenceId> seqs;
  for (std::size_t b = 0; b < lengths.size(); ++b) {
    seqs.push_back(cache.add_sequence());
    const auto k = random_values<float>(std::size_t(lengths[b] * hkv * d), 80 + unsigned(b));
    const auto v = random_values<float>(k.size(), 90 + unsigned(b));
    cache.append(seqs.back(), alibi::make_view(k.data(), 1, lengths[b], hkv, d),
                 alibi::make_view(v.data(), 1, lengths[b], hkv, d));
  }
  std::vector<float> q = random_values<float>(std::size_t(2 * sq * hq * d), 95, 2.0f);
  for (index_t j = 0; j < (sq - 1) * hq * d; ++j)  // row 1's padding
    q[std::size_t((sq + 1) * hq * d + j)] = nan_value;
  std::vector<float> out(q.size(), -7.0f), lse(std::size_t(2 * hq * sq), -7.0f);
  alibi::Params p;
  p.seqlens_q = lens_q;
  alibi::attention(alibi::make_view<const float>(q.data(), 2, sq, hq, d), cache, seqs,
                   alibi::make_view(out.data(), 2, sq, hq, d), p, lse.data());
  for (std::size_t b = 0; b < 2; ++b) {
    INFO("sequence " << b);
    const index_t n = lengths[b], nq = lens_q[b];
    std::vector<float> k(std::size_t(n * hkv * d)), v(k.size());
    cache.read(seqs[b], 0, n, k.data(), v.data());
    std::vector<float> want(std::size_t(nq * hq * d));
    alibi::reference::attention(
        alibi::make_view<const float>(q.data() + b * sq * hq * d, 1, nq, hq, d),
        alibi::make_view<const float>(k.data(), 1, n, hkv, d),
        alibi::make_view<const float>(v.data(), 1, n, hkv, d),
        alibi::make_view(want.data(), 1, nq, hq, d));
    for (index_t i = 0; i < sq; ++i)
      for (index_t j = 0; j < hq * d; ++j) {
        const float got = out[std::size_t((index_t(b) * sq + i) * hq * d + j)];
        if (i < nq) {
          REQUIRE(double(got) == Approx(double(want[std::size_t(i * hq * d + j)])).margin(2e-5));
        } else {
          REQUIRE(got == 0.0f);
        }
      }
  }
  alibi::Params bad;
  bad.seqlens_q = {3};
  REQUIRE_THROWS_WITH(alibi::attention(alibi::make_view<const float>(q.data(), 2, sq, hq, d),
                                       cache, seqs, alibi::make_view(out.data(), 2, sq, hq, d),
                                       bad),
                      Catch::Contains("seqlens_q has 1 values but the batch is 2"));
}
