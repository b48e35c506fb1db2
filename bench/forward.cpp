// Forward attention: the fused kernel, the materialised Eigen attention a user would write by
// hand, and the float64 reference, on the same problems.
#include <Eigen/Core>

#include <cmath>
#include <limits>

#include "support.hpp"

namespace alibi_bench {
namespace {

/// ALiBi attention written the obvious way with Eigen, one head at a time: S = Q Kᵀ (Eigen's
/// GEMM), bias and mask, row softmax, O = P V. Scores live in an S x S matrix (counted as extra
/// memory: it is allocated with operator new).
void materialised_attention(Problem<float>& p, const std::vector<float>& slopes, bool causal) {
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Strided = Eigen::Map<const Matrix, 0, Eigen::OuterStride<>>;
  using StridedOut = Eigen::Map<Matrix, 0, Eigen::OuterStride<>>;
  const index_t s = p.seq, d = p.head_dim, group = p.heads / p.kv_heads;
  std::vector<float> buffer(std::size_t(s * s));
  Eigen::Map<Matrix> scores(buffer.data(), s, s);
  const float scale = 1.0f / std::sqrt(float(d)),
              minus_inf = -std::numeric_limits<float>::infinity();
  for (index_t h = 0; h < p.heads; ++h) {
    const index_t kv = h / group;
    const Strided q(p.q.data() + h * d, s, d, Eigen::OuterStride<>(p.heads * d));
    const Strided k(p.k.data() + kv * d, s, d, Eigen::OuterStride<>(p.kv_heads * d));
    const Strided v(p.v.data() + kv * d, s, d, Eigen::OuterStride<>(p.kv_heads * d));
    StridedOut out(p.out.data() + h * d, s, d, Eigen::OuterStride<>(p.heads * d));
    scores.noalias() = q * k.transpose();
    const float m = slopes[std::size_t(h)];
    for (index_t i = 0; i < s; ++i)
      for (index_t j = 0; j < s; ++j)
        scores(i, j) =
            causal && j > i ? minus_inf : scale * scores(i, j) - m * float(i > j ? i - j : j - i);
    const Eigen::VectorXf max = scores.rowwise().maxCoeff();
    scores = (scores.colwise() - max).array().exp().matrix();
    const Eigen::VectorXf sum = scores.rowwise().sum();
    out.noalias() = scores * v;
    out = sum.cwiseInverse().asDiagonal() * out;
  }
}

enum class Kernel { fused, materialised, reference };

// Arguments: S, H, Hkv, D, causal, threads.
template <class T, Kernel kernel>
void BM_forward(benchmark::State& state) {
  Problem<T> p(state.range(0), state.range(1), state.range(2), state.range(3));
  alibi::Params params;
  // Every allowed key: these cases measure the kernel's arithmetic against the FLOP ceilings
  // (bench/long_context.cpp measures the tail skip).
  params.tail_tolerance = 0;
  params.causal = state.range(4) != 0;
  const int threads = int(state.range(5));
  params.num_threads = threads;
  const std::vector<float> slopes = alibi::slopes(int(p.heads));
  std::size_t extra = 0;
  Stopwatch clock;
  for (auto _ : state) {
    const std::size_t before = allocated_bytes();
    reset_peak();
    if constexpr (kernel == Kernel::fused) {
      alibi::attention(p.queries(), p.keys(), p.values(), p.output(), params);
    } else if constexpr (kernel == Kernel::materialised) {
      Eigen::setNbThreads(threads);
      materialised_attention(p, slopes, params.causal);
    } else {
      alibi::reference::attention(p.queries(), p.keys(), p.values(), p.output(), params);
    }
    extra = peak_allocated_bytes() - before;
    benchmark::DoNotOptimize(p.out.data());
    benchmark::ClobberMemory();
  }
  const double seconds = clock.seconds();
  Eigen::setNbThreads(0);
  report(state, attention_flops(double(p.seq), double(p.heads), double(p.head_dim), params.causal),
         double(p.seq), seconds, threads, extra);
}

void names(benchmark::internal::Benchmark* b) {
  b->ArgNames({"S", "H", "Hkv", "D", "causal", "threads"})
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

/// Prefill shapes: the S sweep the plot draws, then head counts, head dims, GQA, bidirectional.
void prefill(benchmark::internal::Benchmark* b) {
  names(b);
  for (long s : {512, 1024, 2048, 4096, 8192, 16384})
    for (long threads : {1, 2}) b->Args({s, 8, 8, 64, 1, threads});
  for (long threads : {1, 2}) b->Args({2048, 8, 8, 64, 0, threads});
  for (long s : {2048, 4096}) {
    b->Args({s, 32, 32, 128, 1, 2});
    b->Args({s, 32, 8, 128, 1, 2});
    b->Args({s, 32, 32, 64, 1, 2});
    b->Args({s, 32, 32, 128, 0, 2});
  }
}

/// The same, but only as far as the S x S matrix stays reasonable for the materialised code.
void materialised(benchmark::internal::Benchmark* b) {
  names(b);
  for (long s : {512, 1024, 2048, 4096, 8192})
    for (long threads : {1, 2}) b->Args({s, 8, 8, 64, 1, threads});
  for (long threads : {1, 2}) b->Args({2048, 8, 8, 64, 0, threads});
  b->Args({4096, 32, 32, 128, 1, 2});
}

void bfloat16(benchmark::internal::Benchmark* b) {
  names(b);
  for (long threads : {1, 2}) b->Args({2048, 8, 8, 64, 1, threads});
  b->Args({4096, 32, 8, 128, 1, 2});
}

/// Half storage at the prefill bar's shape, next to fused/float's.
void half(benchmark::internal::Benchmark* b) {
  names(b);
  b->Args({4096, 32, 32, 128, 1, 2});
  b->Args({4096, 32, 8, 128, 1, 2});
}

void long_sequence(benchmark::internal::Benchmark* b) {
  names(b);
  b->Args({65536, 1, 1, 64, 1, 2})->Iterations(1);
}

void reference(benchmark::internal::Benchmark* b) {
  names(b);
  b->Args({512, 8, 8, 64, 1, 1});
}

BENCHMARK_TEMPLATE(BM_forward, float, Kernel::fused)->Name("fused/float")->Apply(prefill);
BENCHMARK_TEMPLATE(BM_forward, Eigen::bfloat16, Kernel::fused)->Name("fused/bf16")->Apply(bfloat16);
BENCHMARK_TEMPLATE(BM_forward, Eigen::half, Kernel::fused)->Name("fused/half")->Apply(half);
BENCHMARK_TEMPLATE(BM_forward, float, Kernel::fused)
    ->Name("fused_long/float")
    ->Apply(long_sequence);
BENCHMARK_TEMPLATE(BM_forward, float, Kernel::materialised)
    ->Name("materialised_eigen/float")
    ->Apply(materialised);
BENCHMARK_TEMPLATE(BM_forward, float, Kernel::reference)->Name("reference/float")->Apply(reference);

}  // namespace
}  // namespace alibi_bench
