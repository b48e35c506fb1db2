// The memory-budgeted cache at the bar's shape: a streaming session of up to 262144 tokens,
// Hq = Hkv = 32, D = 64, slopes(32), keys, values and queries of unit-variance entries.
//   budget/certificate: the session at max_bytes = 1/64 of the full f32 cache (int8: 1/256),
//     memory checked after every page of appends; then the newest query's output against dense
//     float64 attention over the whole history, which the bench regenerates (4.3 GB at 262144
//     tokens in f32: each token's rows are a function of its index), the certificate beside the
//     change it bounds, and StreamingLLM (4 sinks plus one window for all heads) at the same
//     memory beside it;
//   budget/decode: decode steps (append one token, attend) of the budgeted session as it grows
//     from 16k to 256k tokens.
// Heavy: run alone, e.g. --benchmark_filter=budget/.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "support.hpp"

namespace alibi_bench {
namespace {

using alibi::KVFormat;
using alibi::PagedKVCache;
using alibi::SequenceId;

constexpr index_t heads = 32, dim = 64, sinks = 4;
constexpr double full_bytes_per_token = double(heads) * dim * 2 * sizeof(float);

/// Uniform in [-sqrt 3, sqrt 3) (unit variance), the same values each time they are asked for:
/// row `row` of stream `stream` (0 keys, 1 values, 2 queries), n entries.
void token_row(std::uint64_t stream, std::uint64_t row, float* out, index_t n) {
  std::uint64_t x = (stream << 56) ^ (row * 0x9E3779B97F4A7C15ull);
  for (index_t i = 0; i < n; ++i) {
    x += 0x9E3779B97F4A7C15ull;  // splitmix64
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    out[i] = (float(z >> 40) * 0x1p-24f * 2.0f - 1.0f) * 1.7320508f;
  }
}

/// The budgeted session: one sequence, appended a page (64 tokens) at a time, the largest
/// bytes_used() seen after any append kept.
struct Session {
  std::unique_ptr<PagedKVCache> cache;
  SequenceId id = 0;
  index_t length = 0;
  std::size_t peak = 0;
  std::vector<float> k, v;

  Session(KVFormat format, std::size_t budget) {
    PagedKVCache::Options o(heads, dim, 0, 64, format, budget, alibi::slopes(heads));
    cache = std::make_unique<PagedKVCache>(o);
    id = cache->add_sequence();
  }
  void grow(index_t to, index_t chunk = 64) {
    k.resize(std::size_t(chunk * heads * dim));
    v.resize(k.size());
    while (length < to) {
      const index_t n = std::min(chunk, to - length);
      for (index_t t = 0; t < n; ++t) {
        token_row(0, std::uint64_t(length + t), k.data() + t * heads * dim, heads * dim);
        token_row(1, std::uint64_t(length + t), v.data() + t * heads * dim, heads * dim);
      }
      cache->append(id, alibi::make_view<const float>(k.data(), 1, n, heads, dim),
                    alibi::make_view<const float>(v.data(), 1, n, heads, dim));
      length += n;
      peak = std::max(peak, cache->bytes_used());
    }
  }
};

/// Online softmax in double of one head's row over keys fed one at a time.
struct Row {
  double max = -HUGE_VAL, sum = 0;
  std::vector<double> acc = std::vector<double>(std::size_t(dim), 0.0);
  void add(double logit, const float* value) {
    if (logit > max) {
      const double f = std::exp(max - logit);
      sum *= f;
      for (double& a : acc) a *= f;
      max = logit;
    }
    const double w = std::exp(logit - max);
    sum += w;
    for (index_t d = 0; d < dim; ++d) acc[std::size_t(d)] += w * double(value[d]);
  }
  double out(index_t d) const { return acc[std::size_t(d)] / sum; }
};

/// A row as the cache stores it (int8: rounded as the cache rounds it).
void as_stored(KVFormat format, float* row) {
  if (format != KVFormat::int8) return;
  const alibi::detail::Int8Format f{dim};
  std::vector<unsigned char> stored(std::size_t(f.row_bytes()));
  f.store(row, reinterpret_cast<alibi::detail::Int8Format::Storage*>(stored.data()));
  f.to_acc(reinterpret_cast<const alibi::detail::Int8Format::Storage*>(stored.data()), row);
}

void BM_certificate(benchmark::State& state) {
  const KVFormat format = state.range(0) == 0 ? KVFormat::f32 : KVFormat::int8;
  const index_t tokens = state.range(1);
  const double fraction = format == KVFormat::f32 ? 1.0 / 64 : 1.0 / 256;
  // The bar's budget: a fraction of the full f32 cache at 262144 tokens.
  const auto budget = std::size_t(full_bytes_per_token * 262144 * fraction);
  // StreamingLLM at the same memory, in the same format: 4 sinks and one window, whole tokens.
  const PagedKVCache probe(PagedKVCache::Options(heads, dim, 0, 64, format));
  const double token_bytes = double(probe.page_bytes()) / 64 * heads;
  const index_t window = index_t(double(budget) / token_bytes) - sinks;
  const std::vector<float> slopes = alibi::slopes(heads);
  const double scale = 1.0 / std::sqrt(double(dim));
  for (auto _ : state) {
    Session s(format, budget);
    s.grow(tokens);
    std::vector<float> q(std::size_t(heads * dim)), out(q.size());
    token_row(2, 0, q.data(), heads * dim);
    alibi::AttentionStats stats;
    alibi::Params p;
    p.stats = &stats;
    alibi::attention(alibi::make_view<const float>(q.data(), 1, 1, heads, dim), *s.cache, {s.id},
                     alibi::make_view(out.data(), 1, 1, heads, dim), p);
    // One pass over the regenerated history: per head the full history (as appended, and as
    // stored), what the budgeted cache kept, and StreamingLLM's sinks and window.
    std::vector<Row> full(heads), stored(heads), kept(heads), streaming(heads);
    std::vector<index_t> evicted_end(heads);
    for (index_t h = 0; h < heads; ++h) evicted_end[std::size_t(h)] = s.cache->evicted_end(s.id, h);
    const index_t sink_end = s.cache->sink_end(), p_last = tokens - 1;
    std::vector<float> k(std::size_t(heads * dim)), v(k.size()), ks(k.size()), vs(k.size());
    double max_v = 0;
    for (index_t t = 0; t < tokens; ++t) {
      token_row(0, std::uint64_t(t), k.data(), heads * dim);
      token_row(1, std::uint64_t(t), v.data(), heads * dim);
      ks = k;
      vs = v;
      for (index_t h = 0; h < heads; ++h) {
        as_stored(format, ks.data() + h * dim);
        as_stored(format, vs.data() + h * dim);
      }
      for (const float x : vs) max_v = std::max(max_v, double(std::fabs(x)));
      for (index_t h = 0; h < heads; ++h) {
        double dot = 0, dot_stored = 0;
        for (index_t d = 0; d < dim; ++d) {
          dot += double(q[std::size_t(h * dim + d)]) * double(k[std::size_t(h * dim + d)]);
          dot_stored += double(q[std::size_t(h * dim + d)]) * double(ks[std::size_t(h * dim + d)]);
        }
        const double bias = double(slopes[std::size_t(h)]) * double(p_last - t);
        full[std::size_t(h)].add(scale * dot - bias, v.data() + h * dim);
        const double logit = scale * dot_stored - bias;
        stored[std::size_t(h)].add(logit, vs.data() + h * dim);
        const index_t gone = evicted_end[std::size_t(h)];
        if (gone == 0 || t < sink_end || t >= gone) kept[std::size_t(h)].add(logit, vs.data() + h * dim);
        if (t < sinks || t >= tokens - window) streaming[std::size_t(h)].add(logit, vs.data() + h * dim);
      }
    }
    double ours_change = 0, ours_error = 0, kernel_vs_kept = 0, streaming_change = 0;
    for (index_t h = 0; h < heads; ++h)
      for (index_t d = 0; d < dim; ++d) {
        const double reference = stored[std::size_t(h)].out(d);
        ours_change = std::max(ours_change, std::fabs(kept[std::size_t(h)].out(d) - reference));
        streaming_change =
            std::max(streaming_change, std::fabs(streaming[std::size_t(h)].out(d) - reference));
        ours_error = std::max(ours_error, std::fabs(double(out[std::size_t(h * dim + d)]) -
                                                    full[std::size_t(h)].out(d)));
        kernel_vs_kept = std::max(kernel_vs_kept, std::fabs(double(out[std::size_t(h * dim + d)]) -
                                                            kept[std::size_t(h)].out(d)));
      }
    const double bound = stats.evicted_weight_bound;
    state.counters["budget_MiB"] = double(budget) / (1 << 20);
    state.counters["full_f32_MiB"] = full_bytes_per_token * double(tokens) / (1 << 20);
    state.counters["peak_of_budget"] = double(s.peak) / double(budget);
    state.counters["bound"] = bound;
    state.counters["log2_bound"] = std::log2(bound);  // the console prints tiny values unscaled
    state.counters["bound_le_2^-24"] = bound <= 0x1p-24 ? 1 : 0;
    // Eviction alone, in float64 over the stored history: ours, its limit, StreamingLLM's.
    state.counters["change"] = ours_change;
    state.counters["2_bound_maxv"] = 2 * bound * max_v;
    state.counters["certified"] = ours_change <= 2 * bound * max_v ? 1 : 0;
    state.counters["streaming_change"] = streaming_change;
    // Against what ours can be at most (its measured change is often exactly 0 in float64).
    state.counters["streaming_over_ours_bound"] =
        streaming_change / std::max(2 * bound * max_v, std::numeric_limits<double>::min());
    // End to end: the float kernel over the budgeted cache against the full float history.
    state.counters["kernel_error"] = ours_error;
    state.counters["kernel_vs_kept"] = kernel_vs_kept;
    state.counters["streaming_window"] = double(window);
  }
}

BENCHMARK(BM_certificate)
    ->Name("budget/certificate/Hq:32/Hkv:32/D:64")
    ->ArgNames({"int8", "tokens"})
    ->Args({0, 16384})
    ->Args({0, 65536})
    ->Args({0, 262144})
    ->Args({1, 262144})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

/// The decode session, grown across the cases (contexts ascending).
Session& decode_session() {
  static Session s(KVFormat::f32, std::size_t(full_bytes_per_token * 262144 / 64));
  return s;
}

void BM_decode(benchmark::State& state) {
  Session& s = decode_session();
  s.grow(state.range(0), 1024);
  std::vector<float> q(std::size_t(heads * dim)), out(q.size()), k(q.size()), v(q.size());
  alibi::AttentionStats stats;
  alibi::Params p;
  p.stats = &stats;
  double bound = 0;
  Stopwatch clock;
  for (auto _ : state) {
    const auto t = std::uint64_t(s.length);
    token_row(0, t, k.data(), heads * dim);
    token_row(1, t, v.data(), heads * dim);
    token_row(2, t, q.data(), heads * dim);
    s.cache->append(s.id, alibi::make_view<const float>(k.data(), 1, 1, heads, dim),
                    alibi::make_view<const float>(v.data(), 1, 1, heads, dim));
    ++s.length;
    alibi::attention(alibi::make_view<const float>(q.data(), 1, 1, heads, dim), *s.cache, {s.id},
                     alibi::make_view(out.data(), 1, 1, heads, dim), p);
    bound = std::max(bound, stats.evicted_weight_bound);
    s.peak = std::max(s.peak, s.cache->bytes_used());
  }
  const double seconds = clock.seconds();
  state.counters["tokens/s"] = double(state.iterations()) / seconds;
  state.counters["MiB"] = double(s.cache->bytes_used()) / (1 << 20);
  state.counters["peak_of_budget"] = double(s.peak) / double(s.cache->max_bytes());
  state.counters["bound"] = bound;
  state.counters["visited"] = double(stats.keys_visited);
}

BENCHMARK(BM_decode)
    ->Name("budget/decode/f32/Hq:32/Hkv:32/D:64/budget:1_64")
    ->ArgNames({"context"})
    ->Arg(16384)
    ->Arg(32768)
    ->Arg(65536)
    ->Arg(131072)
    ->Arg(262144)
    ->MinTime(1.0)
    ->UseRealTime();

}  // namespace
}  // namespace alibi_bench
