// Long context: prefill with the tail skip against tail_tolerance = 0, decode against a float
// KV cache from 1k to 128k tokens with and without the skip, and the memory bandwidth (a STREAM
// triad) that dense decode is measured against.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

#include "support.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace alibi_bench {

double measure_triad(int threads, double seconds) {
  const std::size_t n = std::size_t(1) << 25;  // 128 MiB per array
  // The KV cache's allocator: huge pages where the cache gets them too.
  alibi::detail::cache_vector<float> a(n, 0.0f), b(n, 1.0f), c(n, 2.0f);
  long runs = 0;
  Stopwatch clock;
  do {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < long(n); ++i)
      a[std::size_t(i)] = b[std::size_t(i)] + 0.5f * c[std::size_t(i)];
    benchmark::DoNotOptimize(a.data());
    ++runs;
  } while (clock.seconds() < seconds);
  return 12.0 * double(n) * double(runs) / clock.seconds() / 1e9;
}

namespace {

void BM_triad(benchmark::State& state) {
  const int threads = int(state.range(0));
  for (auto _ : state) state.counters["GB/s"] = measure_triad(threads, 0.2);
}

// Arguments: S, threads, skip (0: tail_tolerance = 0, 1: the default).
void BM_prefill(benchmark::State& state) {
  const index_t s = state.range(0), heads = 8, dim = 64;
  Problem<float> p(s, heads, heads, dim);
  alibi::Params params;
  params.num_threads = int(state.range(1));
  params.tail_tolerance = state.range(2) != 0 ? alibi::Params{}.tail_tolerance : 0.0f;
  // The dense result, for the difference the skip makes.
  std::vector<float> dense;
  if (state.range(2) != 0) {
    alibi::Params full = params;
    full.tail_tolerance = 0;
    alibi::attention(p.queries(), p.keys(), p.values(), p.output(), full);
    dense = p.out;
  }
  alibi::AttentionStats stats;
  params.stats = &stats;
  Stopwatch clock;
  for (auto _ : state) {
    alibi::attention(p.queries(), p.keys(), p.values(), p.output(), params);
    benchmark::DoNotOptimize(p.out.data());
  }
  report(state, attention_flops(double(s), double(heads), double(dim), true), double(s),
         clock.seconds(), int(state.range(1)), 0);
  state.counters["visited"] = double(stats.keys_visited) / double(stats.keys_allowed);
  if (!dense.empty()) {
    float diff = 0;
    for (std::size_t i = 0; i < dense.size(); ++i)
      diff = std::max(diff, std::fabs(dense[i] - p.out[i]));
    state.counters["max_diff"] = diff;
  }
}

/// A float cache of `context` random tokens, 8 kv heads of 128, built once per length.
alibi::KVCache<float>& decode_cache(index_t context) {
  static std::map<index_t, std::unique_ptr<alibi::KVCache<float>>> caches;
  auto& cache = caches[context];
  if (!cache) {
    cache = std::make_unique<alibi::KVCache<float>>(1, 8, 128);
    const index_t chunk = 4096;
    Problem<float> tokens(chunk, 8, 8, 128);
    for (index_t t = 0; t < context; t += chunk) {
      const index_t n = std::min(chunk, context - t);
      cache->append(alibi::make_view<const float>(tokens.k.data(), 1, n, 8, 128),
                    alibi::make_view<const float>(tokens.v.data(), 1, n, 8, 128));
    }
  }
  return *cache;
}

// Arguments: context, threads, skip. Hq = 32 over Hkv = 8, D = 128, slopes(32).
void BM_decode(benchmark::State& state) {
  const index_t context = state.range(0);
  const int threads = int(state.range(1));
  alibi::KVCache<float>& cache = decode_cache(context);
  Problem<float> step(1, 32, 8, 128);
  alibi::Params params;
  params.num_threads = threads;
  params.tail_tolerance = state.range(2) != 0 ? alibi::Params{}.tail_tolerance : 0.0f;
  alibi::AttentionStats stats;
  params.stats = &stats;
  Stopwatch clock;
  for (auto _ : state) {
    alibi::attention(step.queries(), cache, step.output(), params);
    benchmark::DoNotOptimize(step.out.data());
  }
  const double seconds = clock.seconds(), tokens = double(state.iterations());
  // Bytes of K and V a dense step reads; with the skip, those of the keys it visited.
  const double bytes = double(stats.keys_visited) * (128 + 128) * sizeof(float);
  state.counters["tokens/s"] = tokens / seconds;
  state.counters["bytes/s"] = benchmark::Counter(
      bytes * tokens / seconds, benchmark::Counter::kDefaults, benchmark::Counter::kIs1000);
  // Against a triad measured right after the steps: on a shared machine the bandwidth left to
  // us drifts (47 to 82 GB/s here), so a figure taken minutes apart would compare two machines.
  state.counters["of_bandwidth"] = bytes * tokens / seconds / 1e9 / measure_triad(threads, 0.3);
  state.counters["visited"] = double(stats.keys_visited) / double(stats.keys_allowed);
}

BENCHMARK(BM_triad)
    ->Name("ceiling/triad")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_prefill)
    ->Name("prefill_skip/float/H:8/D:64")
    ->ArgNames({"S", "threads", "skip"})
    ->ArgsProduct({{4096, 8192, 16384, 32768}, {2}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_decode)
    ->Name("decode/float/Hq:32/Hkv:8/D:128")
    ->ArgNames({"context", "threads", "skip"})
    ->ArgsProduct({{1024, 4096, 16384, 65536, 131072}, {2}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace alibi_bench
