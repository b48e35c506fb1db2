// Serving: decode over a PagedKVCache in each storage format at Hq = 32, Hkv = 8, D = 128 (bytes
// actually read, against a triad measured right after), the paged f32 cache against plain
// attention over one contiguous view of the same keys, continuous batching (16 sequences of 1k
// to 32k tokens in one call against 16 calls), the int8 error against the f32 cache, bytes per
// token of each format and the cost of a fork.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "support.hpp"

namespace alibi_bench {
namespace {

using alibi::KVFormat;
using alibi::PagedKVCache;
using alibi::SequenceId;

constexpr index_t heads = 32, kv_heads = 8, dim = 128;

const char* format_name(KVFormat f) {
  return f == KVFormat::f16    ? "f16"
         : f == KVFormat::bf16 ? "bf16"
         : f == KVFormat::int8 ? "int8"
                               : "f32";
}

/// n random tokens (normal, seed 7 as the other cases) appended to `id` 4096 at a time.
void fill(PagedKVCache& cache, SequenceId id, index_t n) {
  const index_t chunk = 4096;
  Problem<float> tokens(chunk, kv_heads, kv_heads, dim);
  for (index_t t = 0; t < n; t += chunk) {
    const index_t m = std::min(chunk, n - t);
    cache.append(id, alibi::make_view<const float>(tokens.k.data(), 1, m, kv_heads, dim),
                 alibi::make_view<const float>(tokens.v.data(), 1, m, kv_heads, dim));
  }
}

/// The one large thing built at a time (a 128k-token f32 cache is 1 GiB): kept while cases ask
/// for the same key, dropped when one asks for another.
struct Slot {
  std::string key;
  std::unique_ptr<PagedKVCache> cache;
  std::vector<SequenceId> seqs;
  std::vector<float> k, v;  // a contiguous copy, for the plain-attention case
};
Slot& slot(const std::string& key) {
  static Slot s;
  if (s.key != key) s = Slot{key, nullptr, {}, {}, {}};
  return s;
}

/// One sequence of `context` tokens in `format`.
Slot& decode_slot(KVFormat format, index_t context) {
  Slot& s = slot(std::string("decode/") + format_name(format) + "/" + std::to_string(context));
  if (!s.cache) {
    s.cache = std::make_unique<PagedKVCache>(PagedKVCache::Options{kv_heads, dim, 0, 64, format});
    s.seqs = {s.cache->add_sequence()};
    fill(*s.cache, s.seqs[0], context);
  }
  return s;
}

/// Bytes a step reads per key visited: its key and value rows in the stored format.
double row_bytes(const PagedKVCache& cache) {
  return double(cache.page_bytes()) / double(cache.page_size());
}

void decode_counters(benchmark::State& state, double bytes_per_step, double seconds, int threads,
                     const alibi::AttentionStats& stats) {
  const double tokens = double(state.iterations());
  state.counters["tokens/s"] = tokens / seconds;
  state.counters["bytes/s"] =
      benchmark::Counter(bytes_per_step * tokens / seconds, benchmark::Counter::kDefaults,
                         benchmark::Counter::kIs1000);
  // Against a triad measured right after the steps (the bandwidth left to us drifts).
  state.counters["of_bandwidth"] =
      bytes_per_step * tokens / seconds / 1e9 / measure_triad(threads, 0.3);
  state.counters["visited"] = double(stats.keys_visited) / double(stats.keys_allowed);
}

// Arguments: format, context, threads, skip (0: tail_tolerance = 0, 1: the default).
void BM_paged_decode(benchmark::State& state) {
  const auto format = KVFormat(state.range(0));
  const index_t context = state.range(1);
  const int threads = int(state.range(2));
  Slot& s = decode_slot(format, context);
  Problem<float> step(1, heads, kv_heads, dim);
  alibi::Params params;
  params.num_threads = threads;
  params.tail_tolerance = state.range(3) != 0 ? alibi::Params{}.tail_tolerance : 0.0f;
  alibi::AttentionStats stats;
  params.stats = &stats;
  Stopwatch clock;
  for (auto _ : state) {
    alibi::attention(step.queries(), *s.cache, s.seqs, step.output(), params);
    benchmark::DoNotOptimize(step.out.data());
  }
  const double seconds = clock.seconds();
  decode_counters(state, double(stats.keys_visited) * row_bytes(*s.cache), seconds, threads, stats);
}

// Arguments: context, threads. Plain attention over one contiguous [1, S, Hkv, D] float view.
void BM_contiguous_decode(benchmark::State& state) {
  const index_t context = state.range(0);
  const int threads = int(state.range(1));
  Slot& s = slot("contiguous/" + std::to_string(context));
  if (s.k.empty()) {
    PagedKVCache cache(PagedKVCache::Options{kv_heads, dim});
    const SequenceId id = cache.add_sequence();
    fill(cache, id, context);  // the same keys as the paged case
    s.k.resize(std::size_t(context * kv_heads * dim));
    s.v.resize(s.k.size());
    cache.read(id, 0, context, s.k.data(), s.v.data());
  }
  Problem<float> step(1, heads, kv_heads, dim);
  alibi::Params params;
  params.num_threads = threads;
  params.tail_tolerance = 0;
  alibi::AttentionStats stats;
  params.stats = &stats;
  const auto k = alibi::make_view<const float>(s.k.data(), 1, context, kv_heads, dim);
  const auto v = alibi::make_view<const float>(s.v.data(), 1, context, kv_heads, dim);
  Stopwatch clock;
  for (auto _ : state) {
    alibi::attention(step.queries(), k, v, step.output(), params);
    benchmark::DoNotOptimize(step.out.data());
  }
  const double seconds = clock.seconds();
  decode_counters(state, double(stats.keys_visited) * 2 * dim * sizeof(float), seconds, threads,
                  stats);
}

// Arguments: calls (1: the 16 sequences in one call; 16: a call each), threads, skip.
void BM_batch16(benchmark::State& state) {
  const index_t calls = state.range(0);
  const int threads = int(state.range(1));
  Slot& s = slot("batch16");
  if (!s.cache) {
    s.cache = std::make_unique<PagedKVCache>(PagedKVCache::Options{kv_heads, dim});
    for (index_t i = 0; i < 16; ++i) {
      s.seqs.push_back(s.cache->add_sequence());
      fill(*s.cache, s.seqs.back(), 1024 + i * (32768 - 1024) / 15 / 64 * 64);
    }
  }
  Problem<float> steps(16, heads, kv_heads, dim);  // row b: sequence b's decode step
  alibi::Params params;
  params.num_threads = threads;
  params.tail_tolerance = state.range(2) != 0 ? alibi::Params{}.tail_tolerance : 0.0f;
  const index_t row = heads * dim;
  Stopwatch clock;
  for (auto _ : state) {
    if (calls == 1) {
      alibi::attention(alibi::make_view<const float>(steps.q.data(), 16, 1, heads, dim), *s.cache,
                       s.seqs, alibi::make_view(steps.out.data(), 16, 1, heads, dim), params);
    } else {
      for (index_t b = 0; b < 16; ++b)
        alibi::attention(alibi::make_view<const float>(steps.q.data() + b * row, 1, 1, heads, dim),
                         *s.cache, {s.seqs[std::size_t(b)]},
                         alibi::make_view(steps.out.data() + b * row, 1, 1, heads, dim), params);
    }
    benchmark::DoNotOptimize(steps.out.data());
  }
  state.counters["tokens/s"] = 16 * double(state.iterations()) / clock.seconds();
}

// Arguments: context, threads. The int8 and f16 caches' decode output against the f32 cache's,
// over the same appended tokens: max and mean |diff| of out.
void BM_format_error(benchmark::State& state) {
  const index_t context = state.range(0);
  Problem<float> step(1, heads, kv_heads, dim);
  alibi::Params params;
  params.num_threads = int(state.range(1));
  std::vector<float> out[3];
  const KVFormat formats[] = {KVFormat::f32, KVFormat::int8, KVFormat::f16};
  for (auto _ : state)
    for (int f = 0; f < 3; ++f) {
      PagedKVCache cache(PagedKVCache::Options{kv_heads, dim, 0, 64, formats[f]});
      const SequenceId id = cache.add_sequence();
      fill(cache, id, context);
      alibi::attention(step.queries(), cache, {id}, step.output(), params);
      out[f] = step.out;
    }
  for (int f = 1; f < 3; ++f) {
    double worst = 0, total = 0;
    for (std::size_t i = 0; i < out[0].size(); ++i) {
      const double diff = std::fabs(double(out[f][i]) - double(out[0][i]));
      worst = std::max(worst, diff);
      total += diff;
    }
    const std::string name = format_name(formats[f]);
    state.counters[name + "_max_diff"] = worst;
    state.counters[name + "_mean_diff"] = total / double(out[0].size());
  }
}

// Bytes per token of each format (bytes_used over the tokens held) and their ratios to f32.
void BM_bytes_per_token(benchmark::State& state) {
  const index_t tokens = 4096;
  double bytes[4] = {};
  for (auto _ : state)
    for (int f = 0; f < 4; ++f) {
      PagedKVCache cache(PagedKVCache::Options{kv_heads, dim, 0, 64, KVFormat(f)});
      const SequenceId id = cache.add_sequence();
      fill(cache, id, tokens);
      bytes[f] = double(cache.bytes_used()) / double(tokens);
    }
  for (int f = 0; f < 4; ++f) {
    state.counters[std::string(format_name(KVFormat(f))) + "_bytes/token"] = bytes[f];
    if (f > 0)
      state.counters[std::string(format_name(KVFormat(f))) + "_over_f32"] = bytes[f] / bytes[0];
  }
}

// Arguments: tokens. A fork of a sequence of that many tokens, one token appended to it, and its
// release; counters: the pages the fork and its first append added per kv head.
void BM_fork(benchmark::State& state) {
  const index_t tokens = state.range(0);
  PagedKVCache cache(PagedKVCache::Options{kv_heads, dim});
  const SequenceId parent = cache.add_sequence();
  fill(cache, parent, tokens);
  Problem<float> token(1, kv_heads, kv_heads, dim);
  const std::size_t before = cache.bytes_used();
  double added = 0;
  for (auto _ : state) {
    const SequenceId child = cache.fork(parent);
    cache.append(child, alibi::make_view<const float>(token.k.data(), 1, 1, kv_heads, dim),
                 alibi::make_view<const float>(token.v.data(), 1, 1, kv_heads, dim));
    added = double(cache.bytes_used() - before) / double(cache.page_bytes()) / double(kv_heads);
    cache.release(child);
  }
  state.counters["pages_added_per_kv_head"] = added;
  state.counters["parent_pages_per_kv_head"] =
      double(before) / double(cache.page_bytes()) / double(kv_heads);
}

void decode_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"format", "context", "threads", "skip"})
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  for (long f = 0; f < 4; ++f)
    for (long skip : {0, 1}) b->Args({f, 131072, 2, skip});
}

BENCHMARK(BM_paged_decode)->Name("serving/decode/paged/Hq:32/Hkv:8/D:128")->Apply(decode_args);
BENCHMARK(BM_contiguous_decode)
    ->Name("serving/decode/contiguous_f32/Hq:32/Hkv:8/D:128")
    ->ArgNames({"context", "threads"})
    ->Args({131072, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_batch16)
    ->Name("serving/batch16/f32/Hq:32/Hkv:8/D:128/lengths:1k-32k")
    ->ArgNames({"calls", "threads", "skip"})
    ->ArgsProduct({{1, 16}, {2}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_format_error)
    ->Name("serving/format_error/Hq:32/Hkv:8/D:128")
    ->ArgNames({"context", "threads"})
    ->Args({16384, 2})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_bytes_per_token)
    ->Name("serving/bytes_per_token/Hkv:8/D:128")
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_fork)
    ->Name("serving/fork/f32/Hkv:8/D:128")
    ->ArgNames({"tokens"})
    ->Arg(4096)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace alibi_bench
