// PagedKVCache and attention over it: for every storage format, attention over any batch of its
// sequences equals alibi::reference::attention over what read() returns (GQA, windows, causal or
// not, forks, releases, page sizes around the tiles, split decode bitwise the same for any thread
// count); read() against the appended data; pages shared by forks and copied on write; bad input
// throws with the cache unchanged.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

using namespace alibi_test;
using alibi::KVFormat;
using alibi::PagedKVCache;
using alibi::SequenceId;

namespace {

const KVFormat all_formats[] = {KVFormat::f32, KVFormat::f16, KVFormat::bf16, KVFormat::int8};

const char* format_name(KVFormat f) {
  switch (f) {
    case KVFormat::f16:
      return "f16";
    case KVFormat::bf16:
      return "bf16";
    case KVFormat::int8:
      return "int8";
    default:
      return "f32";
  }
}

/// Tokens appended to a sequence, kept to compare read() with.
struct Tokens {
  std::vector<float> k, v;
};

/// Appends n random tokens to `id`, `chunk` at a time (the last chunk shorter); returns them.
Tokens append_random(PagedKVCache& cache, SequenceId id, index_t n, std::uint32_t seed,
                     index_t chunk, float amplitude = 1.0f) {
  const index_t H = cache.kv_heads(), D = cache.head_dim(), Dv = cache.value_dim();
  Tokens t{random_values<float>(std::size_t(n * H * D), seed, amplitude),
           random_values<float>(std::size_t(n * H * Dv), seed + 1000)};
  for (index_t at = 0; at < n; at += chunk) {
    const index_t m = std::min(chunk, n - at);
    cache.append(id, alibi::make_view<const float>(t.k.data() + at * H * D, 1, m, H, D),
                 alibi::make_view<const float>(t.v.data() + at * H * Dv, 1, m, H, Dv));
  }
  return t;
}

/// The reference over what read() returns: every sequence of `seqs` padded to the longest, with
/// its length as seqlens_k. Returns out [B, Sq, Hq, Dv].
std::vector<float> reference_over_read(const PagedKVCache& cache,
                                       const std::vector<SequenceId>& seqs,
                                       const std::vector<float>& q, index_t Sq, index_t Hq,
                                       alibi::Params params, std::vector<float>* lse = nullptr) {
  const index_t B = index_t(seqs.size()), H = cache.kv_heads(), D = cache.head_dim(),
                Dv = cache.value_dim();
  index_t longest = 1;
  for (const SequenceId id : seqs) longest = std::max(longest, cache.length(id));
  std::vector<float> k(std::size_t(B * longest * H * D)), v(std::size_t(B * longest * H * Dv));
  for (index_t b = 0; b < B; ++b) {
    const index_t n = cache.length(seqs[std::size_t(b)]);
    cache.read(seqs[std::size_t(b)], 0, n, k.data() + b * longest * H * D,
               v.data() + b * longest * H * Dv);
    params.seqlens_k.push_back(n);
  }
  std::vector<float> out(std::size_t(B * Sq * Hq * Dv));
  if (lse != nullptr) lse->assign(std::size_t(B * Hq * Sq), 0.0f);
  alibi::reference::attention(
      alibi::make_view(q.data(), B, Sq, Hq, D), alibi::make_view(k.data(), B, longest, H, D),
      alibi::make_view(v.data(), B, longest, H, Dv), alibi::make_view(out.data(), B, Sq, Hq, Dv),
      params, lse != nullptr ? lse->data() : nullptr);
  return out;
}

std::vector<float> paged_attention(const PagedKVCache& cache, const std::vector<SequenceId>& seqs,
                                   const std::vector<float>& q, index_t Sq, index_t Hq,
                                   const alibi::Params& params, std::vector<float>* lse = nullptr) {
  const index_t B = index_t(seqs.size()), D = cache.head_dim(), Dv = cache.value_dim();
  std::vector<float> out(std::size_t(B * Sq * Hq * Dv));
  if (lse != nullptr) lse->assign(std::size_t(B * Hq * Sq), 0.0f);
  alibi::attention(alibi::make_view(q.data(), B, Sq, Hq, D), cache, seqs,
                   alibi::make_view(out.data(), B, Sq, Hq, Dv), params,
                   lse != nullptr ? lse->data() : nullptr);
  return out;
}

void check_close(const std::vector<float>& got, const std::vector<float>& expected, double margin) {
  REQUIRE(got.size() == expected.size());
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(double(got[i]) - double(expected[i])));
  CHECK(worst <= margin);
}

/// Every byte the cache would show through read() for these sequences.
std::vector<float> snapshot(const PagedKVCache& cache, const std::vector<SequenceId>& seqs) {
  std::vector<float> all;
  for (const SequenceId id : seqs) {
    const index_t n = cache.length(id);
    std::vector<float> k(std::size_t(n * cache.kv_heads() * cache.head_dim())),
        v(std::size_t(n * cache.kv_heads() * cache.value_dim()));
    cache.read(id, 0, n, k.data(), v.data());
    all.insert(all.end(), k.begin(), k.end());
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

}  // namespace

TEST_CASE("paged attention equals the reference over read(), every format and pattern", "[paged]") {
  struct Pattern {
    const char* name;
    index_t page_size, Hq, Hkv, D, Dv, Sq;
    alibi::Params params;
  };
  std::vector<Pattern> patterns;
  const auto add = [&](const char* name, index_t page, index_t Hq, index_t Hkv, index_t D,
                       index_t Dv, index_t Sq, auto&& tweak) {
    alibi::Params p;
    tweak(p);
    patterns.push_back({name, page, Hq, Hkv, D, Dv, Sq, p});
  };
  const auto none = [](alibi::Params&) {};
  add("decode, GQA 8/2, pages of 64", 64, 8, 2, 32, 32, 1, none);
  add("decode, pages of 192 (straddling the 256-key tiles)", 192, 4, 2, 16, 16, 1, none);
  add("chunk of 5 queries, pages of 320, value_dim differs", 320, 4, 1, 16, 24, 5, none);
  add("prefill-sized chunk of 40 queries (the tile path)", 64, 4, 2, 16, 16, 40, none);
  add("bidirectional", 128, 4, 2, 16, 16, 3, [](alibi::Params& p) { p.causal = false; });
  add("sliding window", 64, 4, 2, 16, 16, 2, [](alibi::Params& p) { p.window_left = 100; });
  add("window both sides, bidirectional", 64, 2, 2, 8, 8, 6, [](alibi::Params& p) {
    p.causal = false;
    p.window_left = 70;
    p.window_right = 3;
  });
  add("no tail skip, head_dim not a multiple of the vector", 64, 4, 2, 12, 20, 1,
      [](alibi::Params& p) { p.tail_tolerance = 0; });
  add("explicit slopes, one zero, and a scale", 64, 2, 1, 16, 16, 1, [](alibi::Params& p) {
    p.slopes = {0.05f, 0.0f};
    p.scale = 0.3f;
  });

  for (const KVFormat format : all_formats)
    for (const Pattern& pattern : patterns) {
      INFO(format_name(format) << ": " << pattern.name);
      PagedKVCache cache(
          PagedKVCache::Options{pattern.Hkv, pattern.D, pattern.Dv, pattern.page_size, format});
      // A prompt, forked twice; one fork released; parent and child go on apart.
      const SequenceId prompt = cache.add_sequence();
      append_random(cache, prompt, 700, 11, 97);
      const SequenceId child = cache.fork(prompt);
      const SequenceId dropped = cache.fork(prompt);
      append_random(cache, dropped, 50, 12, 50);
      append_random(cache, child, 130, 13, 1 + 30);
      append_random(cache, prompt, 3, 14, 1);
      cache.release(dropped);
      const SequenceId fresh = cache.add_sequence();
      append_random(cache, fresh, 9, 15, 9);
      // Any subset, any order.
      const std::vector<SequenceId> seqs{child, fresh, prompt};
      const index_t B = 3;
      const auto q = random_values<float>(std::size_t(B * pattern.Sq * pattern.Hq * pattern.D), 16);
      std::vector<float> lse, expected_lse;
      const auto out =
          paged_attention(cache, seqs, q, pattern.Sq, pattern.Hq, pattern.params, &lse);
      const auto expected = reference_over_read(cache, seqs, q, pattern.Sq, pattern.Hq,
                                                pattern.params, &expected_lse);
      check_close(out, expected, 2e-5);
      for (std::size_t i = 0; i < lse.size(); ++i)
        if (std::isinf(expected_lse[i]))
          CHECK(lse[i] == expected_lse[i]);
        else
          CHECK(lse[i] == Approx(expected_lse[i]).margin(1e-4));
    }
}

TEST_CASE("paged split decode: the reference over read(), bitwise the same for any thread count",
          "[paged]") {
  // Long enough for several split chunks (16384 keys each), with and without the tail skip.
  for (const KVFormat format : {KVFormat::f32, KVFormat::int8}) {
    INFO(format_name(format));
    PagedKVCache cache({2, 16, 0, 128, format});
    const SequenceId a = cache.add_sequence();
    append_random(cache, a, 40000, 21, 4096);
    const SequenceId b = cache.fork(a);
    append_random(cache, b, 5, 22, 1);
    const SequenceId c = cache.add_sequence();
    append_random(cache, c, 300, 23, 300);
    const std::vector<SequenceId> seqs{a, b, c};
    const auto q = random_values<float>(std::size_t(3 * 4 * 16), 24);
    for (const float tolerance : {0.0f, 0x1p-24f}) {
      INFO("tail_tolerance " << tolerance);
      alibi::Params p;
      p.tail_tolerance = tolerance;
      p.slopes = {0.001f, 0.0005f, 0.002f, 0.0f};  // weak decay: several chunks matter
      p.num_threads = 1;
      const auto one = paged_attention(cache, seqs, q, 1, 4, p);
      check_close(one, reference_over_read(cache, seqs, q, 1, 4, p), 2e-5);
      for (const int threads : {2, 3}) {
        p.num_threads = threads;
        const auto many = paged_attention(cache, seqs, q, 1, 4, p);
        CHECK(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("paged tail skip visits O(1/m) keys and stays within float round-off", "[paged]") {
  PagedKVCache cache({2, 32});
  const SequenceId id = cache.add_sequence();
  append_random(cache, id, 20000, 31, 2000);
  const auto q = random_values<float>(std::size_t(8 * 32), 32);
  alibi::AttentionStats stats;
  alibi::Params p;
  p.stats = &stats;
  p.num_threads = 1;
  const auto out = paged_attention(cache, {id}, q, 1, 8, p);
  CHECK(stats.keys_visited < stats.keys_allowed / 4);
  check_close(out, reference_over_read(cache, {id}, q, 1, 8, p), 2e-6);
}

TEST_CASE("paged attention takes half and bfloat16 queries and outputs", "[paged]") {
  PagedKVCache cache({2, 16, 0, 64, KVFormat::f16});
  const SequenceId id = cache.add_sequence();
  append_random(cache, id, 300, 41, 300);
  const auto qf = random_values<float>(std::size_t(2 * 4 * 16), 42);
  const auto expected = reference_over_read(cache, {id}, qf, 2, 4, {});
  std::vector<Eigen::half> q(qf.size()), out(expected.size());
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = Eigen::half(qf[i]);
  std::vector<float> qh(qf.size());  // the queries as rounded
  for (std::size_t i = 0; i < q.size(); ++i) qh[i] = float(q[i]);
  const auto expected_h = reference_over_read(cache, {id}, qh, 2, 4, {});
  alibi::attention(alibi::make_view(q.data(), 1, 2, 4, 16), cache, {id},
                   alibi::make_view(out.data(), 1, 2, 4, 16));
  for (std::size_t i = 0; i < out.size(); ++i)
    CHECK(float(out[i]) == Approx(expected_h[i]).margin(2e-3));
}

TEST_CASE("read() returns the appended data as stored: exact, rounded, or within half a step",
          "[paged]") {
  for (const KVFormat format : all_formats) {
    INFO(format_name(format));
    const index_t H = 3, D = 72, Dv = 40, n = 150;  // D: blocks of 32, 32 and 8
    PagedKVCache cache({H, D, Dv, 64, format});
    const SequenceId id = cache.add_sequence();
    const Tokens t = append_random(cache, id, n, 51, 37, 3.0f);
    std::vector<float> k(t.k.size()), v(t.v.size());
    cache.read(id, 0, n, k.data(), v.data());
    const auto check_rows = [&](const std::vector<float>& got, const std::vector<float>& x,
                                index_t dim) {
      for (std::size_t row = 0; row < x.size() / std::size_t(dim); ++row)
        for (index_t b0 = 0; b0 < dim; b0 += 32) {
          const index_t end = std::min(dim, b0 + 32);
          float largest = 0;
          for (index_t d = b0; d < end; ++d)
            largest = std::max(largest, std::fabs(x[row * std::size_t(dim) + std::size_t(d)]));
          for (index_t d = b0; d < end; ++d) {
            const std::size_t i = row * std::size_t(dim) + std::size_t(d);
            switch (format) {
              case KVFormat::f32:
                REQUIRE(got[i] == x[i]);
                break;
              case KVFormat::f16:
                REQUIRE(got[i] == float(Eigen::half(x[i])));
                break;
              case KVFormat::bf16:
                REQUIRE(got[i] == float(Eigen::bfloat16(x[i])));
                break;
              case KVFormat::int8: {
                // Half a step (largest / 127) with the float round-off of the step itself.
                const double step = double(largest) / 127;
                REQUIRE(std::fabs(double(got[i]) - double(x[i])) <= step / 2 * (1 + 1e-5) + 1e-7);
                break;
              }
            }
          }
        }
    };
    check_rows(k, t.k, D);
    check_rows(v, t.v, Dv);
    // A middle range reads the same rows.
    std::vector<float> part(std::size_t(10 * H * D));
    cache.read(id, 70, 80, part.data(), nullptr);
    CHECK(std::equal(part.begin(), part.end(), k.begin() + 70 * H * D));
  }
}

TEST_CASE("int8 blocks of zeros read as zeros, NaN propagates", "[paged]") {
  PagedKVCache cache({1, 64, 0, 64, KVFormat::int8});
  const SequenceId id = cache.add_sequence();
  std::vector<float> k(64, 0.0f), v(64, 1.0f);
  k[40] = std::nanf("");
  cache.append(id, alibi::make_view<const float>(k.data(), 1, 1, 1, 64),
               alibi::make_view<const float>(v.data(), 1, 1, 1, 64));
  std::vector<float> kr(64), vr(64);
  cache.read(id, 0, 1, kr.data(), vr.data());
  for (int d = 0; d < 32; ++d) CHECK(kr[std::size_t(d)] == 0.0f);
  CHECK(std::isnan(kr[40]));
  for (float x : vr) CHECK(x == 1.0f);
}

TEST_CASE("half and bfloat16 appends store the same as their float values", "[paged]") {
  PagedKVCache from_float({2, 16}), from_half({2, 16});
  const SequenceId a = from_float.add_sequence(), b = from_half.add_sequence();
  const auto kf = random_values<Eigen::half>(std::size_t(5 * 2 * 16), 61);
  const auto vf = random_values<Eigen::half>(std::size_t(5 * 2 * 16), 62);
  std::vector<float> k(kf.size()), v(vf.size());
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = float(kf[i]), v[i] = float(vf[i]);
  from_float.append(a, alibi::make_view<const float>(k.data(), 1, 5, 2, 16),
                    alibi::make_view<const float>(v.data(), 1, 5, 2, 16));
  from_half.append(b, alibi::make_view(kf.data(), 1, 5, 2, 16),
                   alibi::make_view(vf.data(), 1, 5, 2, 16));
  CHECK(snapshot(from_float, {a}) == snapshot(from_half, {b}));
  PagedKVCache from_bf16({2, 16});
  const SequenceId c = from_bf16.add_sequence();
  std::vector<Eigen::bfloat16> kb(k.size()), vb(v.size());
  for (std::size_t i = 0; i < k.size(); ++i)
    kb[i] = Eigen::bfloat16(k[i]), vb[i] = Eigen::bfloat16(v[i]);
  from_bf16.append(c, alibi::make_view(kb.data(), 1, 5, 2, 16),
                   alibi::make_view(vb.data(), 1, 5, 2, 16));
  std::vector<float> kr(k.size());
  from_bf16.read(c, 0, 5, kr.data(), nullptr);
  for (std::size_t i = 0; i < k.size(); ++i) CHECK(kr[i] == float(kb[i]));
}

TEST_CASE("forks share full pages and copy a shared partial page on write", "[paged]") {
  const index_t H = 4, D = 32;
  PagedKVCache cache({H, D});
  const std::size_t page = cache.page_bytes();
  const SequenceId parent = cache.add_sequence();
  append_random(cache, parent, 4096, 71, 1024);
  const std::size_t prompt_bytes = cache.bytes_used();
  CHECK(prompt_bytes == std::size_t(4096 / 64 * H) * page);
  const auto before = snapshot(cache, {parent});
  const SequenceId child = cache.fork(parent);
  CHECK(cache.bytes_used() == prompt_bytes);  // nothing copied
  CHECK(cache.length(child) == 4096);
  CHECK(snapshot(cache, {child}) == before);
  append_random(cache, child, 1, 72, 1);
  CHECK(cache.bytes_used() == prompt_bytes + std::size_t(H) * page);  // one page per kv head
  CHECK(snapshot(cache, {parent}) == before);

  // A partial last page: shared by the fork, copied by whichever appends first.
  append_random(cache, parent, 10, 73, 10);
  const std::size_t used = cache.bytes_used();
  const auto parent_now = snapshot(cache, {parent});
  const SequenceId second = cache.fork(parent);
  CHECK(cache.bytes_used() == used);
  append_random(cache, second, 3, 74, 3);
  CHECK(cache.bytes_used() == used + std::size_t(H) * page);  // its copy of the partial page
  CHECK(snapshot(cache, {parent}) == parent_now);
  append_random(cache, parent, 3, 75, 3);  // the parent's page is its own again: no copy
  CHECK(cache.bytes_used() == used + std::size_t(H) * page);

  // Releasing gives back exactly the pages nobody else holds.
  cache.release(second);
  CHECK(cache.bytes_used() == used);
  cache.release(child);
  cache.release(parent);
  CHECK(cache.bytes_used() == 0);
  CHECK(cache.sequences() == 0);
}

TEST_CASE("bytes_used: int8 is under 0.29 of f32, f16 and bf16 half of it", "[paged]") {
  std::size_t bytes[4];
  for (const KVFormat format : all_formats) {
    PagedKVCache cache({8, 128, 0, 64, format});
    const SequenceId id = cache.add_sequence();
    append_random(cache, id, 1000, 81, 1000);
    bytes[int(format)] = cache.bytes_used();
  }
  CHECK(double(bytes[int(KVFormat::int8)]) <= 0.29 * double(bytes[int(KVFormat::f32)]));
  CHECK(bytes[int(KVFormat::f16)] * 2 == bytes[int(KVFormat::f32)]);
  CHECK(bytes[int(KVFormat::bf16)] * 2 == bytes[int(KVFormat::f32)]);
}

TEST_CASE("paged cache: bad input throws std::invalid_argument and changes nothing", "[paged]") {
  using Options = PagedKVCache::Options;
  CHECK_THROWS_AS(PagedKVCache(Options{0, 16}), std::invalid_argument);
  CHECK_THROWS_AS(PagedKVCache(Options{2, 0}), std::invalid_argument);
  CHECK_THROWS_AS(PagedKVCache(Options{2, 16, -1}), std::invalid_argument);
  CHECK_THROWS_WITH(PagedKVCache(Options{2, 16, 0, 100}), Catch::Contains("page_size"));
  CHECK_THROWS_AS(PagedKVCache(Options{2, 16, 0, 0}), std::invalid_argument);

  PagedKVCache cache({2, 16, 8});
  const SequenceId id = cache.add_sequence();
  append_random(cache, id, 100, 91, 100);
  const SequenceId gone = cache.fork(id);
  cache.release(gone);
  const auto before = snapshot(cache, {id});
  const std::size_t bytes = cache.bytes_used();
  const auto unchanged = [&] {
    CHECK(cache.length(id) == 100);
    CHECK(cache.bytes_used() == bytes);
    CHECK(snapshot(cache, {id}) == before);
  };
  std::vector<float> k(2 * 2 * 16, 1.0f), v(2 * 2 * 8, 1.0f);
  const auto kv = [&](index_t b, index_t n, index_t h, index_t d) {
    return alibi::make_view<const float>(k.data(), b, n, h, d);
  };
  const auto vv = [&](index_t b, index_t n, index_t h, index_t d) {
    return alibi::make_view<const float>(v.data(), b, n, h, d);
  };
  // Unknown and released ids, everywhere.
  for (const SequenceId bad : {gone, SequenceId(12345), SequenceId(-1)}) {
    CHECK_THROWS_WITH(cache.append(bad, kv(1, 1, 2, 16), vv(1, 1, 2, 8)),
                      Catch::Contains(std::to_string(bad)));
    CHECK_THROWS_AS(cache.length(bad), std::invalid_argument);
    CHECK_THROWS_AS(cache.fork(bad), std::invalid_argument);
    CHECK_THROWS_AS(cache.release(bad), std::invalid_argument);
    CHECK_THROWS_AS(cache.read(bad, 0, 0, nullptr, nullptr), std::invalid_argument);
  }
  // Shapes that do not fit.
  CHECK_THROWS_WITH(cache.append(id, kv(1, 1, 2, 8), vv(1, 1, 2, 8)),
                    Catch::Contains("[1, 1, 2, 8]"));
  CHECK_THROWS_AS(cache.append(id, kv(1, 2, 2, 16), vv(1, 1, 2, 8)), std::invalid_argument);
  CHECK_THROWS_AS(cache.append(id, kv(1, 1, 1, 16), vv(1, 1, 1, 8)), std::invalid_argument);
  CHECK_THROWS_AS(cache.append(id, kv(2, 1, 2, 16), vv(2, 1, 2, 8)), std::invalid_argument);
  CHECK_THROWS_AS(cache.append(id, kv(1, 1, 2, 16), vv(1, 1, 2, 16)), std::invalid_argument);
  CHECK_THROWS_AS(
      cache.append(id, alibi::TensorView<const float>(nullptr, {1, 1, 2, 16}, {32, 32, 16, 1}),
                   vv(1, 1, 2, 8)),
      std::invalid_argument);
  CHECK_THROWS_AS(cache.read(id, 0, 101, nullptr, nullptr), std::invalid_argument);
  CHECK_THROWS_AS(cache.read(id, 5, 4, nullptr, nullptr), std::invalid_argument);
  CHECK_THROWS_AS(cache.read(id, -1, 4, nullptr, nullptr), std::invalid_argument);
  unchanged();

  // Attention: ids, shapes, params; out stays untouched.
  const auto q = random_values<float>(2 * 4 * 16, 92);
  std::vector<float> out(2 * 4 * 8, 7.0f);
  const auto call = [&](const std::vector<SequenceId>& seqs, index_t B, index_t Hq, index_t D,
                        index_t Dv, alibi::Params p = {}) {
    alibi::attention(alibi::make_view(q.data(), B, 1, Hq, D), cache, seqs,
                     alibi::make_view(out.data(), B, 1, Hq, Dv), p);
  };
  CHECK_THROWS_WITH(call({id, gone}, 2, 4, 16, 8), Catch::Contains("seqs[1]"));
  CHECK_THROWS_WITH(call({id}, 2, 4, 16, 8), Catch::Contains("seqs"));
  CHECK_THROWS_WITH(call({id}, 1, 4, 8, 8), Catch::Contains("head_dim"));
  CHECK_THROWS_WITH(call({id}, 1, 3, 16, 8), Catch::Contains("kv heads"));
  CHECK_THROWS_WITH(call({id}, 1, 4, 16, 4), Catch::Contains("out"));
  alibi::Params p;
  p.seqlens_k = {100};
  CHECK_THROWS_WITH(call({id}, 1, 4, 16, 8, p), Catch::Contains("seqlens_k"));
  p = {};
  p.key_offset = 3;
  CHECK_THROWS_AS(call({id}, 1, 4, 16, 8, p), std::invalid_argument);
  p = {};
  p.slopes = {1.0f, 2.0f};
  CHECK_THROWS_WITH(call({id}, 1, 4, 16, 8, p), Catch::Contains("slopes"));
  CHECK(std::all_of(out.begin(), out.end(), [](float x) { return x == 7.0f; }));
  unchanged();
}

TEST_CASE("paged attention over no keys: out 0, lse -inf", "[paged]") {
  PagedKVCache cache({1, 8});
  const SequenceId empty = cache.add_sequence();
  std::vector<float> q(2 * 8, 1.0f), out(2 * 8, 5.0f), lse(2, 0.0f);
  alibi::attention(alibi::make_view(q.data(), 1, 1, 2, 8), cache, {empty},
                   alibi::make_view(out.data(), 1, 1, 2, 8), {}, lse.data());
  for (float x : out) CHECK(x == 0.0f);
  for (float x : lse) CHECK(std::isinf(x));
}
