// KVCache and attention against it: prefill plus token-by-token decode equals attention over the
// whole contiguous history; ragged batches; the split-KV decode of long caches (within the tail
// bound of the dense result, bitwise the same for any thread count); the bounded keep_last cache.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <utility>

using namespace alibi_test;

namespace {

/// Token t of a [B, n, H, D] buffer as a [B, 1, H, D] view.
template <class T>
alibi::TensorView<const T> token(const std::vector<T>& x, index_t batch, index_t n, index_t heads,
                                 index_t dim, index_t t, index_t count = 1) {
  return alibi::make_view<const T>(x.data() + t * heads * dim, {batch, count, heads, dim},
                                   {n * heads * dim, heads * dim, dim, 1});
}

}  // namespace

TEST_CASE("prefill then decode through the cache equals attention over the whole history",
          "[kv_cache]") {
  const index_t B = 2, n = 300, Hq = 8, Hkv = 2, D = 16, prompt = 200;
  const auto q = random_values<float>(std::size_t(B * n * Hq * D), 131);
  const auto k = random_values<float>(std::size_t(B * n * Hkv * D), 132);
  const auto v = random_values<float>(std::size_t(B * n * Hkv * D), 133);
  // The oracle: one causal call over all n tokens.
  const Shape whole{B, n, n, Hq, Hkv, D, D};
  std::vector<float> expected(whole.out_size());
  alibi::attention(q_view(whole, q.data()), k_view(whole, k.data()), v_view(whole, v.data()),
                   out_view(whole, expected.data()));

  alibi::KVCache<float> cache(B, Hkv, D);
  cache.append(token(k, B, n, Hkv, D, 0, prompt), token(v, B, n, Hkv, D, 0, prompt));
  std::vector<float> out(std::size_t(B * prompt * Hq * D));
  alibi::attention(token(q, B, n, Hq, D, 0, prompt), cache,
                   alibi::make_view(out.data(), B, prompt, Hq, D));
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < prompt * Hq * D; ++i)
      REQUIRE(out[std::size_t(b * prompt * Hq * D + i)] ==
              Approx(expected[std::size_t(b * n * Hq * D + i)]).margin(1e-6));
  for (index_t t = prompt; t < n; ++t) {
    cache.append(token(k, B, n, Hkv, D, t), token(v, B, n, Hkv, D, t));
    std::vector<float> step(std::size_t(B * Hq * D));
    alibi::attention(token(q, B, n, Hq, D, t), cache, alibi::make_view(step.data(), B, 1, Hq, D));
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 0; i < Hq * D; ++i)
        REQUIRE(step[std::size_t(b * Hq * D + i)] ==
                Approx(expected[std::size_t((b * n + t) * Hq * D + i)]).margin(1e-6));
  }
  CHECK(cache.length(0) == n);
  CHECK(cache.capacity() >= n);
  CHECK(cache.capacity() < 4 * n);  // geometric growth, not one token at a time
}

TEST_CASE("ragged batch rows each attend their own history", "[kv_cache]") {
  const index_t B = 2, n = 50, H = 2, D = 8;
  const auto k = random_values<float>(std::size_t(B * n * H * D), 141);
  const auto v = random_values<float>(std::size_t(B * n * H * D), 142);
  const auto q = random_values<float>(std::size_t(B * H * D), 143);
  alibi::KVCache<float> cache(B, H, D);
  cache.append(token(k, B, n, H, D, 0, n), token(v, B, n, H, D, 0, n), {n, 31});
  CHECK(cache.length(1) == 31);
  std::vector<float> out(std::size_t(B * H * D)), ref(out.size());
  alibi::attention(alibi::make_view(q.data(), B, 1, H, D), cache,
                   alibi::make_view(out.data(), B, 1, H, D));
  alibi::Params p;
  p.seqlens_k = {n, 31};
  alibi::reference::attention(
      alibi::make_view(q.data(), B, 1, H, D), alibi::make_view(k.data(), B, n, H, D),
      alibi::make_view(v.data(), B, n, H, D), alibi::make_view(ref.data(), B, 1, H, D), p);
  for (std::size_t i = 0; i < out.size(); ++i) CHECK(out[i] == Approx(ref[i]).margin(1e-6));
}

TEST_CASE("split-KV decode of a long cache: within the bound, the same for any thread count",
          "[kv_cache]") {
  // 40000 keys: more than two decode chunks. Slopes 1/2 and 1/4 skip everything past the first
  // chunk; slope 0 needs the split and the merge. D = 64 with 3 query rows per head takes the
  // decode walk (a few rows per kv head, head_dim a whole number of packets); D = 8 the tiles.
  const index_t n = 40000, Hq = 4, Hkv = 2;
  for (const auto& [D, Sq] : {std::pair<index_t, index_t>{8, 1}, {64, 3}}) {
    INFO("D " << D << ", Sq " << Sq);
    const auto k = random_values<float>(std::size_t(n * Hkv * D), 151);
    const auto v = random_values<float>(std::size_t(n * Hkv * D), 152);
    const auto q = random_values<float>(std::size_t(Sq * Hq * D), 153);
    alibi::KVCache<float> cache(1, Hkv, D);
    cache.append(alibi::make_view(k.data(), 1, n, Hkv, D),
                 alibi::make_view(v.data(), 1, n, Hkv, D));
    const std::size_t size = std::size_t(Sq * Hq * D);
    for (const std::vector<float>& slopes : {std::vector<float>{0.5f, 0.25f, 0.5f, 0.25f},
                                             std::vector<float>{0.5f, 0.0f, 0.01f, 0.25f}}) {
      alibi::Params p;
      p.slopes = slopes;
      std::vector<float> ref(size);
      alibi::reference::attention(
          alibi::make_view(q.data(), 1, Sq, Hq, D), alibi::make_view(k.data(), 1, n, Hkv, D),
          alibi::make_view(v.data(), 1, n, Hkv, D), alibi::make_view(ref.data(), 1, Sq, Hq, D), p);
      std::vector<std::vector<float>> outs;
      for (int threads : {1, 2, 3}) {
        for (float tolerance : {0.0f, 0x1p-24f}) {
          p.num_threads = threads;
          p.tail_tolerance = tolerance;
          alibi::AttentionStats stats;
          p.stats = &stats;
          outs.emplace_back(size);
          alibi::attention(alibi::make_view(q.data(), 1, Sq, Hq, D), cache,
                           alibi::make_view(outs.back().data(), 1, Sq, Hq, D), p);
          for (std::size_t i = 0; i < ref.size(); ++i)
            CHECK(outs.back()[i] == Approx(ref[i]).margin(1e-6));
          if (tolerance == 0) CHECK(stats.keys_visited == Hkv * n);
          if (tolerance > 0 && slopes[1] > 0) CHECK(stats.keys_visited < Hkv * 16384);
        }
      }
      for (std::size_t i = 2; i < outs.size(); ++i)
        CHECK(std::memcmp(outs[i].data(), outs[i % 2].data(), size * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("keep_last bounds the cache and keeps windowed attention exact", "[kv_cache]") {
  const index_t n = 3000, H = 1, D = 8, keep = 256;
  const auto k = random_values<float>(std::size_t(n * H * D), 161);
  const auto v = random_values<float>(std::size_t(n * H * D), 162);
  const auto q = random_values<float>(std::size_t(n * H * D), 163);
  alibi::KVCache<float> cache(1, H, D, 0, keep);
  alibi::Params p;
  p.window_left = keep - 1;  // what the model attends is what the cache keeps
  std::size_t most = 0;
  for (index_t t = 0; t < n; ++t) {
    cache.append(token(k, 1, n, H, D, t), token(v, 1, n, H, D, t));
    most = std::max(most, cache.bytes());
    if (t % 97 != 0 && t != n - 1) continue;
    std::vector<float> out(static_cast<std::size_t>(D)), ref(out.size());
    alibi::attention(token(q, 1, n, H, D, t), cache, alibi::make_view(out.data(), 1, 1, H, D), p);
    alibi::Params full = p;
    full.query_offset = t;
    alibi::reference::attention(token(q, 1, n, H, D, t), alibi::make_view(k.data(), 1, t + 1, H, D),
                                alibi::make_view(v.data(), 1, t + 1, H, D),
                                alibi::make_view(ref.data(), 1, 1, H, D), full);
    for (index_t d = 0; d < D; ++d)
      REQUIRE(out[std::size_t(d)] == Approx(ref[std::size_t(d)]).margin(1e-6));
  }
  CHECK(cache.first_position() > 0);
  CHECK(most <= std::size_t(2 * 4 * keep * H * D) * sizeof(float));  // bounded, not O(n)
}

TEST_CASE("the cache rejects shapes that do not fit and offsets it owns",
          "[kv_cache][validation]") {
  alibi::KVCache<float> cache(1, 2, 8);
  std::vector<float> x(64, 1.0f);
  CHECK_THROWS_WITH(cache.append(alibi::make_view<const float>(x.data(), 1, 2, 2, 4),
                                 alibi::make_view<const float>(x.data(), 1, 2, 2, 4)),
                    Catch::Contains("head_dim 8") && Catch::Contains("[1, 2, 2, 4]"));
  CHECK_THROWS_WITH(cache.append(alibi::make_view<const float>(x.data(), 1, 2, 2, 8),
                                 alibi::make_view<const float>(x.data(), 1, 2, 2, 8), {3}),
                    Catch::Contains("counts[0] = 3"));
  cache.append(alibi::make_view<const float>(x.data(), 1, 2, 2, 8),
               alibi::make_view<const float>(x.data(), 1, 2, 2, 8));
  std::vector<float> out(16);
  alibi::Params p;
  p.key_offset = 5;
  CHECK_THROWS_WITH(alibi::attention(alibi::make_view<const float>(x.data(), 1, 1, 2, 8), cache,
                                     alibi::make_view(out.data(), 1, 1, 2, 8), p),
                    Catch::Contains("key_offset"));
  CHECK_THROWS_AS(alibi::KVCache<float>(0, 2, 8), std::invalid_argument);
}
