// A memory-budgeted PagedKVCache and its certificate. The oracle is float64 attention over the
// full, never-evicted history (an unbudgeted twin cache of the same format holds it, so both see
// the same stored values) and over exactly what the budgeted cache kept: the certificate must
// bound the evicted weight and the output change, on random and adversarial data, with GQA,
// windows, sinks, learned sinks, forks, split decodes and int8 storage.
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>

using namespace alibi_test;
using alibi::KVFormat;
using alibi::PagedKVCache;
using alibi::SequenceId;

namespace {

/// A budgeted cache and its unbudgeted twin, fed the same tokens.
struct Session {
  PagedKVCache cache, twin;
  index_t H, D;

  Session(PagedKVCache::Options options)
      : cache(options), twin(unbounded(options)), H(options.kv_heads), D(options.head_dim) {}
  static PagedKVCache::Options unbounded(PagedKVCache::Options o) {
    o.max_bytes = 0;
    return o;
  }
  SequenceId add() {
    const SequenceId a = cache.add_sequence(), b = twin.add_sequence();
    REQUIRE(a == b);
    return a;
  }
  SequenceId fork(SequenceId parent) {
    const SequenceId a = cache.fork(parent), b = twin.fork(parent);
    REQUIRE(a == b);
    return a;
  }
  /// n tokens of unit-variance keys and values; returns nothing, checks the budget after each.
  void append(SequenceId id, index_t n, std::uint32_t seed, index_t chunk = 1) {
    const auto k = random_values<float>(std::size_t(n * H * D), seed, 1.7320508f);
    const auto v = random_values<float>(std::size_t(n * H * D), seed + 7, 1.7320508f);
    for (index_t at = 0; at < n; at += chunk) {
      const index_t m = std::min(chunk, n - at);
      const auto kv = alibi::make_view<const float>(k.data() + at * H * D, 1, m, H, D);
      const auto vv = alibi::make_view<const float>(v.data() + at * H * D, 1, m, H, D);
      cache.append(id, kv, vv);
      twin.append(id, kv, vv);
      REQUIRE(cache.bytes_used() <= cache.max_bytes());
    }
  }
  /// One token with the given key row for every head (values random).
  void append_key(SequenceId id, const std::vector<float>& key, std::uint32_t seed) {
    std::vector<float> k(std::size_t(H * D));
    for (index_t h = 0; h < H; ++h) std::copy(key.begin(), key.end(), k.begin() + h * D);
    const auto v = random_values<float>(std::size_t(H * D), seed, 1.7320508f);
    cache.append(id, alibi::make_view<const float>(k.data(), 1, 1, H, D),
                 alibi::make_view<const float>(v.data(), 1, 1, H, D));
    twin.append(id, alibi::make_view<const float>(k.data(), 1, 1, H, D),
                alibi::make_view<const float>(v.data(), 1, 1, H, D));
  }
};

/// What attention over a budgeted sequence moved, from float64 over the twin's full history.
struct Truth {
  double evicted_weight = 0;  // max over rows of (evicted keys' weight) / (kept sum)
  double kept_error = 0;      // max |kernel - float64 over the kept keys|
  double full_change = 0;     // max |float64 kept - float64 full|
  double full_error = 0;      // max |kernel - float64 full|
  double max_v = 0;
};

/// The kernel's out [1, Sq, Hq, D] for sequence `id` and the queries q against float64 truth.
Truth measure(const Session& s, SequenceId id, const std::vector<float>& q, index_t Sq, index_t Hq,
              const alibi::Params& params, const std::vector<float>& out) {
  const index_t n = s.twin.length(id), H = s.H, D = s.D, group = Hq / H;
  std::vector<float> k(std::size_t(n * H * D)), v(k.size());
  s.twin.read(id, 0, n, k.data(), v.data());
  const std::vector<float> slopes = params.slopes.empty() ? alibi::slopes(int(Hq)) : params.slopes;
  const double scale = 1.0 / std::sqrt(double(D));
  const index_t sink_end = s.cache.sink_end();
  Truth truth;
  for (index_t h = 0; h < Hq; ++h) {
    const index_t kv = h / group, gone = s.cache.evicted_end(id, kv);
    for (index_t i = 0; i < Sq; ++i) {
      const index_t p = n - Sq + i;
      std::vector<double> logit(std::size_t(n), -HUGE_VAL);
      double max = params.sink_logits.empty() ? -HUGE_VAL : double(params.sink_logits[h]);
      for (index_t t = 0; t < n; ++t) {
        if (t > p || (params.window_left >= 0 && t < p - params.window_left)) continue;
        double dot = 0;
        for (index_t d = 0; d < D; ++d)
          dot += double(q[std::size_t((i * Hq + h) * D + d)]) *
                 double(k[std::size_t((t * H + kv) * D + d)]);
        logit[std::size_t(t)] = scale * dot - double(slopes[std::size_t(h)]) * double(p - t);
        max = std::max(max, logit[std::size_t(t)]);
      }
      const auto evicted = [&](index_t t) { return gone > 0 && t >= sink_end && t < gone; };
      double sink =
          params.sink_logits.empty() ? 0.0 : std::exp(double(params.sink_logits[h]) - max);
      double kept_sum = sink, full_sum = sink, evicted_sum = 0;
      std::vector<double> kept_out(std::size_t(D), 0.0), full_out(std::size_t(D), 0.0);
      for (index_t t = 0; t < n; ++t) {
        if (logit[std::size_t(t)] == -HUGE_VAL) continue;
        const double w = std::exp(logit[std::size_t(t)] - max);
        full_sum += w;
        (evicted(t) ? evicted_sum : kept_sum) += w;
        for (index_t d = 0; d < D; ++d) {
          const double x = double(v[std::size_t((t * H + kv) * D + d)]);
          truth.max_v = std::max(truth.max_v, std::fabs(x));
          full_out[std::size_t(d)] += w * x;
          if (!evicted(t)) kept_out[std::size_t(d)] += w * x;
        }
      }
      truth.evicted_weight = std::max(truth.evicted_weight, evicted_sum / kept_sum);
      for (index_t d = 0; d < D; ++d) {
        const double kernel = out[std::size_t((i * Hq + h) * D + d)];
        const double kept = kept_out[std::size_t(d)] / kept_sum,
                     full = full_out[std::size_t(d)] / full_sum;
        truth.kept_error = std::max(truth.kept_error, std::fabs(kernel - kept));
        truth.full_change = std::max(truth.full_change, std::fabs(kept - full));
        truth.full_error = std::max(truth.full_error, std::fabs(kernel - full));
      }
    }
  }
  return truth;
}

/// A decode-shaped call (Sq rows) for `id`; returns out and fills stats.
std::vector<float> attend(const Session& s, SequenceId id, const std::vector<float>& q, index_t Sq,
                          index_t Hq, alibi::Params params, alibi::AttentionStats& stats) {
  std::vector<float> out(std::size_t(Sq * Hq * s.D));
  params.stats = &stats;
  alibi::attention(alibi::make_view(q.data(), 1, Sq, Hq, s.D), s.cache, {id},
                   alibi::make_view(out.data(), 1, Sq, Hq, s.D), params);
  return out;
}

/// The certificate's claims on one call: it bounds the evicted weight and the output change,
/// and the kernel computes the kept keys' attention to float precision.
void check_certificate(const Truth& t, const alibi::AttentionStats& stats, double float_margin) {
  INFO("bound " << stats.evicted_weight_bound << ", evicted weight " << t.evicted_weight
                << ", change " << t.full_change << ", kept error " << t.kept_error);
  REQUIRE(stats.evicted_weight_bound >= t.evicted_weight);
  REQUIRE(t.full_change <= 2 * stats.evicted_weight_bound * t.max_v * (1 + 1e-9) + 1e-15);
  REQUIRE(t.kept_error <= float_margin);
  REQUIRE(t.full_error <= 2 * stats.evicted_weight_bound * t.max_v + float_margin);
}

PagedKVCache::Options budgeted(index_t H, index_t D, std::size_t pages_per_head,
                               std::vector<float> slopes, KVFormat format = KVFormat::f32,
                               index_t sink_tokens = 0) {
  PagedKVCache::Options o(H, D);
  o.format = format;
  o.slopes = std::move(slopes);
  o.sink_tokens = sink_tokens;
  const PagedKVCache probe(PagedKVCache::Options(H, D, 0, 64, format));
  o.max_bytes = probe.page_bytes() * std::size_t(H) * pages_per_head;
  return o;
}

}  // namespace

TEST_CASE("budget: the certificate bounds the change against the full history, random data",
          "[budget]") {
  for (const KVFormat format : {KVFormat::f32, KVFormat::int8}) {
    INFO("format " << int(format));
    const index_t H = 4, D = 16;
    Session s(budgeted(H, D, 6, alibi::slopes(4), format));
    const SequenceId id = s.add();
    double largest = 0;
    std::uint32_t seed = 10;
    for (index_t step = 0; step < 8; ++step) {
      s.append(id, 500, seed++, step % 2 == 0 ? 1 : 37);
      const auto q = random_values<float>(std::size_t(H * D), seed++, 1.7320508f);
      alibi::AttentionStats stats;
      const auto out = attend(s, id, q, 1, H, {}, stats);
      check_certificate(measure(s, id, q, 1, H, {}, out), stats, 3e-6);
      largest = std::max(largest, stats.evicted_weight_bound);
    }
    // 4000 tokens in 24 pages: the cache evicted, so the certificate is not trivially 0, and
    // each head kept a distance in inverse proportion to its slope.
    REQUIRE(largest > 0);
    REQUIRE(s.cache.evicted_end(id, 0) > s.cache.evicted_end(id, 3));
    REQUIRE(s.cache.bytes_used() <= s.cache.max_bytes());
  }
}

TEST_CASE("budget: a far evicted key aligned with a later query, shallow slopes", "[budget]") {
  const index_t H = 2, D = 16;
  // Shallow slopes: the evicted key is far, but barely damped.
  Session s(budgeted(H, D, 4, {1.0f / 1024, 1.0f / 4096}));
  const SequenceId id = s.add();
  std::vector<float> direction = random_values<float>(std::size_t(D), 3);
  double norm = 0;
  for (float x : direction) norm += double(x) * x;
  for (float& x : direction) x = float(x / std::sqrt(norm));
  std::vector<float> huge(direction);
  for (float& x : huge) x *= 40.0f;  // norm 40 against unit-variance keys of norm ~4
  s.append(id, 100, 4);
  s.append_key(id, huge, 5);
  s.append(id, 700, 6, 50);
  REQUIRE(s.cache.evicted_end(id, 0) > 101);  // the huge key is gone
  REQUIRE(s.cache.evicted_norm(id, 0) >= 39.9f);
  std::vector<float> q(std::size_t(H * D));
  for (index_t h = 0; h < H; ++h)
    for (index_t d = 0; d < D; ++d) q[std::size_t(h * D + d)] = 4.0f * direction[std::size_t(d)];
  alibi::AttentionStats stats;
  const auto out = attend(s, id, q, 1, H, {}, stats);
  const Truth t = measure(s, id, q, 1, H, {}, out);
  REQUIRE(t.evicted_weight > 1);  // the evicted key would have dominated
  check_certificate(t, stats, 3e-6);

  // With a limit: BudgetExceeded names the sequence, the head and the bound; out is untouched.
  alibi::Params limited;
  limited.max_evicted_weight = 1e-6;
  std::vector<float> untouched(out.size(), 9.0f);
  try {
    alibi::attention(alibi::make_view<const float>(q.data(), 1, 1, H, D), s.cache, {id},
                     alibi::make_view(untouched.data(), 1, 1, H, D), limited);
    FAIL("no BudgetExceeded");
  } catch (const alibi::BudgetExceeded& e) {
    REQUIRE(e.sequence() == id);
    REQUIRE(e.bound() == stats.evicted_weight_bound);
    REQUIRE(e.bound() > 1e-6);
    REQUIRE(std::string(e.what()).find("sequence " + std::to_string(id)) != std::string::npos);
    REQUIRE(std::string(e.what()).find("query head " + std::to_string(e.head())) !=
            std::string::npos);
  }
  for (float x : untouched) REQUIRE(x == 9.0f);
  // A limit above the bound lets the call through.
  limited.max_evicted_weight = stats.evicted_weight_bound * 2;
  REQUIRE_NOTHROW(alibi::attention(alibi::make_view<const float>(q.data(), 1, 1, H, D), s.cache,
                                   {id}, alibi::make_view(untouched.data(), 1, 1, H, D), limited));
}

TEST_CASE("budget: GQA keeps what the shallowest query head needs; windows; chunks of queries",
          "[budget]") {
  const index_t Hq = 8, H = 2, D = 16;
  const std::vector<float> slopes = alibi::slopes(8);
  Session s(budgeted(H, D, 8, slopes));
  const SequenceId id = s.add();
  s.append(id, 3000, 20, 64);
  // kv head 0 plans for slopes[3] (its shallowest), kv head 1 for slopes[7]: it keeps more.
  REQUIRE(s.cache.evicted_end(id, 0) > s.cache.evicted_end(id, 1));
  for (const index_t window : {-1, 30, 2000}) {
    for (const index_t Sq : {1, 5, 40}) {
      INFO("window " << window << ", Sq " << Sq);
      alibi::Params p;
      p.window_left = window;
      const auto q =
          random_values<float>(std::size_t(Sq * Hq * D), 21 + std::uint32_t(Sq), 1.7320508f);
      alibi::AttentionStats stats;
      const auto out = attend(s, id, q, Sq, Hq, p, stats);
      check_certificate(measure(s, id, q, Sq, Hq, p, out), stats, 3e-6);
      // A window inside what every head kept: nothing evicted is in reach, the bound is 0.
      const index_t reach = s.cache.length(id) - Sq - window;
      if (window >= 0 && reach >= std::max(s.cache.evicted_end(id, 0), s.cache.evicted_end(id, 1)))
        REQUIRE(stats.evicted_weight_bound == 0);
      if (window == 30 && Sq <= 5) REQUIRE(reach >= s.cache.evicted_end(id, 0));
    }
  }
}

TEST_CASE("budget: sink tokens are kept and attended at their positions; learned sinks",
          "[budget]") {
  const index_t H = 4, D = 16;
  Session s(budgeted(H, D, 5, alibi::slopes(4), KVFormat::f32, 4));
  REQUIRE(s.cache.sink_end() == 64);
  const SequenceId id = s.add();
  s.append(id, 2500, 30, 25);
  for (index_t kv = 0; kv < H; ++kv) REQUIRE(s.cache.evicted_end(id, kv) > 64);
  // The sink page stays readable; evicted tokens do not.
  std::vector<float> k(std::size_t(64 * H * D)), v(k.size());
  REQUIRE_NOTHROW(s.cache.read(id, 0, 64, k.data(), v.data()));
  REQUIRE_THROWS_AS(s.cache.read(id, 60, 70, k.data(), v.data()), std::invalid_argument);
  const index_t kept = s.cache.evicted_end(id, 2);
  std::vector<float> row(static_cast<std::size_t>(D));
  s.cache.read_head(id, 2, kept, kept + 1, row.data(), nullptr);
  std::vector<float> all(std::size_t(H * D));
  s.twin.read(id, kept, kept + 1, all.data(), nullptr);
  REQUIRE(std::equal(row.begin(), row.end(), all.begin() + 2 * D));
  for (const bool learned : {false, true}) {
    INFO("learned sinks " << learned);
    alibi::Params p;
    if (learned) p.sink_logits = {0.5f, 2.0f, -1.0f, 3.0f};
    // Queries aligned with the sink keys, so that they carry real weight.
    std::vector<float> q(std::size_t(H * D));
    s.twin.read(id, 0, 1, q.data(), nullptr);
    alibi::AttentionStats stats;
    const auto out = attend(s, id, q, 1, H, p, stats);
    check_certificate(measure(s, id, q, 1, H, p, out), stats, 3e-6);
  }
}

TEST_CASE("budget: a fork shares its parent's evicted state and stays certified", "[budget]") {
  const index_t H = 2, D = 16;
  Session s(budgeted(H, D, 16, {0.25f, 1.0f / 64}));
  const SequenceId parent = s.add();
  s.append(parent, 1500, 40, 100);
  const SequenceId child = s.fork(parent);
  for (index_t kv = 0; kv < H; ++kv) {
    REQUIRE(s.cache.evicted_end(child, kv) == s.cache.evicted_end(parent, kv));
    REQUIRE(s.cache.evicted_norm(child, kv) == s.cache.evicted_norm(parent, kv));
  }
  // Both grow; the budget holds both (shared pages once), and each stays certified.
  s.append(child, 700, 41, 7);
  s.append(parent, 300, 42, 1);
  for (const SequenceId id : {parent, child}) {
    const auto q = random_values<float>(std::size_t(H * D), 43 + std::uint32_t(id), 1.7320508f);
    alibi::AttentionStats stats;
    const auto out = attend(s, id, q, 1, H, {}, stats);
    check_certificate(measure(s, id, q, 1, H, {}, out), stats, 3e-6);
  }
  // Releasing the child frees its own pages only.
  const std::size_t before = s.cache.bytes_used();
  s.cache.release(child);
  REQUIRE(s.cache.bytes_used() < before);
  REQUIRE(s.cache.length(parent) == 1800);
}

TEST_CASE("budget: a split decode of a long budgeted sequence, the same for any thread count",
          "[budget][threads]") {
  // Longer than one decode chunk (16384) with most of it evicted: the kept keys are walked from
  // the earliest kept page at their true distances.
  const index_t H = 2, D = 8;
  Session s(budgeted(H, D, 40, {1.0f / 256, 1.0f / 2048}));
  const SequenceId id = s.add();
  s.append(id, 40000, 50, 4000);
  REQUIRE(s.cache.evicted_end(id, 1) > 16384);
  const auto q = random_values<float>(std::size_t(H * D), 51, 1.7320508f);
  alibi::AttentionStats one, two;
  alibi::Params p;
  p.num_threads = 1;
  const auto a = attend(s, id, q, 1, H, p, one);
  p.num_threads = 2;
  const auto b = attend(s, id, q, 1, H, p, two);
  REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  REQUIRE(one.evicted_weight_bound == two.evicted_weight_bound);
  check_certificate(measure(s, id, q, 1, H, {}, a), one, 3e-6);
}

TEST_CASE("budget: memory never exceeds it, and its limits are checked", "[budget][validation]") {
  const index_t H = 4, D = 16;
  const PagedKVCache probe(PagedKVCache::Options(H, D));
  const std::size_t page = probe.page_bytes();
  PagedKVCache::Options o(H, D);
  o.slopes = alibi::slopes(4);
  // Below one page per kv head, or below the sink pages plus one: rejected at construction.
  o.max_bytes = page * H - 1;
  REQUIRE_THROWS_WITH(PagedKVCache(o), Catch::Contains("options.max_bytes") &&
                                           Catch::Contains("one page per kv head"));
  o.max_bytes = page * H;
  o.sink_tokens = 1;
  REQUIRE_THROWS_AS(PagedKVCache(o), std::invalid_argument);
  o.sink_tokens = 0;
  o.slopes = {0.5f, 0.25f, 0.125f};  // not a multiple of the kv heads
  REQUIRE_THROWS_WITH(PagedKVCache(o), Catch::Contains("options.slopes"));
  o.slopes = {0.5f, -0.25f, 0.125f, 0.1f};
  REQUIRE_THROWS_WITH(PagedKVCache(o), Catch::Contains("options.slopes[1]"));
  o.slopes = alibi::slopes(4);

  // Exactly one page per head: every head keeps just its newest page.
  o.max_bytes = page * H;
  PagedKVCache tight(o);
  const SequenceId a = tight.add_sequence();
  const auto k = random_values<float>(std::size_t(300 * H * D), 60);
  tight.append(a, alibi::make_view<const float>(k.data(), 1, 300, H, D),
               alibi::make_view<const float>(k.data(), 1, 300, H, D));
  REQUIRE(tight.bytes_used() == page * H);
  for (index_t kv = 0; kv < H; ++kv) REQUIRE(tight.evicted_end(a, kv) == 256);
  // A second sequence does not fit: the append throws and changes nothing.
  const SequenceId b = tight.add_sequence();
  REQUIRE_THROWS_WITH(tight.append(b, alibi::make_view<const float>(k.data(), 1, 1, H, D),
                                   alibi::make_view<const float>(k.data(), 1, 1, H, D)),
                      Catch::Contains("cannot hold 2 sequences"));
  REQUIRE(tight.length(b) == 0);
  REQUIRE(tight.length(a) == 300);
  // set_budget: too small throws with nothing changed; 0 lifts the budget.
  REQUIRE_THROWS_AS(tight.set_budget(page), std::invalid_argument);
  REQUIRE(tight.max_bytes() == page * H);
  tight.set_budget(0);
  tight.append(b, alibi::make_view<const float>(k.data(), 1, 300, H, D),
               alibi::make_view<const float>(k.data(), 1, 300, H, D));
  REQUIRE(tight.bytes_used() == 6 * page * H);  // b holds 5 pages per head, a 1
  // Setting a budget evicts at once, down to it.
  tight.set_budget(page * H * 4);
  REQUIRE(tight.bytes_used() <= page * H * 4);
  REQUIRE(tight.length(b) == 300);
  // Reading evicted tokens throws; kept ones read.
  std::vector<float> row(std::size_t(H * D));
  REQUIRE_THROWS_WITH(tight.read(a, 0, 1, row.data(), nullptr), Catch::Contains("evicted"));
  REQUIRE_NOTHROW(tight.read(a, 299, 300, row.data(), nullptr));
  REQUIRE_THROWS_AS(tight.read_head(a, H, 299, 300, row.data(), nullptr), std::invalid_argument);
  REQUIRE_THROWS_AS(tight.evicted_end(a, -1), std::invalid_argument);
}
