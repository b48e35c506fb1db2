#pragma once
// What the benchmark files share: problems with their buffers, FLOP counts, counters, the
// machine's ceilings measured in this process, and the allocation tracker.

#include <alibi/alibi.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <random>
#include <vector>

namespace alibi_bench {

using alibi::index_t;

/// One self-attention problem [1, S, Hq, D] with Hkv kv heads, and its buffers.
template <class T>
struct Problem {
  index_t seq, heads, kv_heads, head_dim;
  std::vector<T> q, k, v, out;

  Problem(index_t s, index_t h, index_t hkv, index_t d)
      : seq(s),
        heads(h),
        kv_heads(hkv),
        head_dim(d),
        q(std::size_t(s * h * d)),
        k(std::size_t(s * hkv * d)),
        v(k.size()),
        out(q.size()) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    for (auto* x : {&q, &k, &v})
      for (T& e : *x) e = T(normal(rng));
  }
  alibi::TensorView<T> queries() { return alibi::make_view(q.data(), 1, seq, heads, head_dim); }
  alibi::TensorView<T> keys() { return alibi::make_view(k.data(), 1, seq, kv_heads, head_dim); }
  alibi::TensorView<T> values() { return alibi::make_view(v.data(), 1, seq, kv_heads, head_dim); }
  alibi::TensorView<T> output() { return alibi::make_view(out.data(), 1, seq, heads, head_dim); }
};

/// FLOPs of the two attention products: 2 S^2 D H each, halved under a causal mask.
inline double attention_flops(double s, double h, double d, bool causal) {
  return (causal ? 2.0 : 4.0) * s * s * d * h;
}

/// GFLOP/s of the FMA-peak loop and of Eigen's 1024^3 sgemm with `threads` threads, measured
/// once per thread count in this process.
struct Ceilings {
  double fma_peak, eigen_gemm;
};
const Ceilings& ceilings(int threads);
double measure_fma_peak(int threads, double seconds);
double measure_eigen_gemm(int threads, double seconds);

/// GB/s of a STREAM triad a[i] = b[i] + s c[i] over arrays far larger than the caches (3 x 4
/// bytes per element: two reads and a write) on `threads` threads, for about `seconds`
/// (bench/long_context.cpp): the memory bandwidth decode is measured against.
double measure_triad(int threads, double seconds);

/// Bytes allocated with operator new (bench/allocations.cpp): now, and the peak since the last
/// reset_peak().
std::size_t allocated_bytes();
std::size_t peak_allocated_bytes();
void reset_peak();

/// Times the benchmark loop in wall-clock seconds (the cases use real time: threads).
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

/// GFLOP/s, tokens/s, the fractions of the ceilings at `threads`, and the peak extra bytes.
void report(benchmark::State& state, double flops, double tokens, double seconds, int threads,
            std::size_t extra_bytes);

}  // namespace alibi_bench
