// Forward attention: the fused kernel against the materialised reference.
#include <alibi/alibi.hpp>

#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

namespace {

/// One benchmark problem: [1, S, H, D] self-attention with its buffers.
template <class T>
struct Problem {
  alibi::index_t seq, heads, head_dim;
  std::vector<T> q, k, v, out;

  Problem(alibi::index_t s, alibi::index_t h, alibi::index_t d)
      : seq(s), heads(h), head_dim(d), q(s * h * d), k(q.size()), v(q.size()), out(q.size()) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    for (auto* x : {&q, &k, &v})
      for (T& e : *x) e = T(normal(rng));
  }
  alibi::TensorView<T> view(std::vector<T>& x) {
    return alibi::make_view(x.data(), 1, seq, heads, head_dim);
  }
};

/// Matmul FLOPs of attention: 2 products of 2 * S^2 * D * H, halved when causal.
double attention_flops(double s, double h, double d, bool causal) {
  return (causal ? 2.0 : 4.0) * s * s * d * h;
}

void set_counters(benchmark::State& state, double flops, double tokens) {
  const auto n = static_cast<double>(state.iterations());
  state.counters["FLOP/s"] = benchmark::Counter(flops * n, benchmark::Counter::kIsRate);
  state.counters["tokens/s"] = benchmark::Counter(tokens * n, benchmark::Counter::kIsRate);
}

// Arguments: S, H, D, causal, threads.
template <class T, bool Reference>
void BM_forward(benchmark::State& state) {
  Problem<T> p(state.range(0), state.range(1), state.range(2));
  alibi::Params params;
  params.causal = state.range(3) != 0;
  params.num_threads = static_cast<int>(state.range(4));
  for (auto _ : state) {
    if (Reference)
      alibi::reference::attention(p.view(p.q), p.view(p.k), p.view(p.v), p.view(p.out), params);
    else
      alibi::attention(p.view(p.q), p.view(p.k), p.view(p.v), p.view(p.out), params);
    benchmark::DoNotOptimize(p.out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, attention_flops(p.seq, p.heads, p.head_dim, params.causal), p.seq);
}

void forward_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"S", "H", "D", "causal", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
  for (long s : {512, 2048})
    for (long causal : {1, 0})
      for (long threads : {1, 2}) b->Args({s, 8, 64, causal, threads});
}

void reference_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"S", "H", "D", "causal", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
  b->Args({512, 8, 64, 1, 1});
}

BENCHMARK_TEMPLATE(BM_forward, float, false)->Name("fused/float")->Apply(forward_args);
BENCHMARK_TEMPLATE(BM_forward, Eigen::bfloat16, false)->Name("fused/bf16")->Apply(forward_args);
BENCHMARK_TEMPLATE(BM_forward, float, true)->Name("reference/float")->Apply(reference_args);

}  // namespace
