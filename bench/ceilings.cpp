// The machine's ceilings, measured in the same process as the kernels: an FMA loop that keeps
// every FMA unit busy, and Eigen's 1024^3 sgemm. Every kernel case reports its GFLOP/s as a
// fraction of both at its thread count.
#include <Eigen/Core>

#include <map>
#include <mutex>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "support.hpp"

namespace alibi_bench {
namespace {

using Packet = Eigen::internal::packet_traits<float>::type;
constexpr int lanes = Eigen::internal::packet_traits<float>::size;
// Enough independent chains to cover FMA latency (4 cycles) times throughput (2 per cycle).
constexpr int chains = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS >= 32 ? 16 : 10;

/// FLOPs of `rounds` rounds of FMAs on one thread.
double fma_loop(long rounds) {
  using namespace Eigen::internal;
  Packet acc[chains];
  for (int i = 0; i < chains; ++i) acc[i] = pset1<Packet>(float(i));
  const Packet a = pset1<Packet>(0.999999f), b = pset1<Packet>(1e-6f);
  for (long r = 0; r < rounds; ++r)
    for (int i = 0; i < chains; ++i) acc[i] = pmadd(acc[i], a, b);
  Packet sum = acc[0];
  for (int i = 1; i < chains; ++i) sum = padd(sum, acc[i]);
  benchmark::DoNotOptimize(sum);
  return 2.0 * lanes * chains * double(rounds);
}

/// Runs fn(thread) on `threads` threads at once; returns wall seconds.
template <class Fn>
double on_threads(int threads, Fn fn) {
  Stopwatch clock;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  fn(omp_get_thread_num());
#else
  (void)threads;
  fn(0);
#endif
  return clock.seconds();
}

}  // namespace

double measure_fma_peak(int threads, double seconds) {
  long rounds = 1 << 20;
  for (;;) {
    const double elapsed = on_threads(threads, [&](int) { fma_loop(rounds); });
    if (elapsed >= seconds) return 2.0 * lanes * chains * double(rounds) * threads / elapsed / 1e9;
    rounds *= 2;
  }
}

double measure_eigen_gemm(int threads, double seconds) {
  const int n = 1024;
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  Eigen::setNbThreads(threads);
  c.noalias() = a * b;  // warm up
  Stopwatch clock;
  long runs = 0;
  do {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    ++runs;
  } while (clock.seconds() < seconds);
  const double elapsed = clock.seconds();
  Eigen::setNbThreads(0);
  return 2.0 * n * n * double(n) * runs / elapsed / 1e9;
}

const Ceilings& ceilings(int threads) {
  static std::mutex mutex;
  static std::map<int, Ceilings> measured;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = measured.find(threads);
  if (it == measured.end())
    it = measured
             .emplace(threads,
                      Ceilings{measure_fma_peak(threads, 0.3), measure_eigen_gemm(threads, 0.5)})
             .first;
  return it->second;
}

void report(benchmark::State& state, double flops, double tokens, double seconds, int threads,
            std::size_t extra_bytes) {
  const auto n = static_cast<double>(state.iterations());
  const double gflops = flops * n / seconds / 1e9;
  const Ceilings& c = ceilings(threads);
  state.counters["GFLOP/s"] = gflops;
  state.counters["tokens/s"] = benchmark::Counter(tokens * n, benchmark::Counter::kIsRate);
  state.counters["of_FMA_peak"] = gflops / c.fma_peak;
  state.counters["of_GEMM"] = gflops / c.eigen_gemm;
  state.counters["extra_bytes"] = benchmark::Counter(
      double(extra_bytes), benchmark::Counter::kDefaults, benchmark::Counter::kIs1024);
}

namespace {

void BM_fma_peak(benchmark::State& state) {
  const int threads = int(state.range(0));
  double flops = 0;
  Stopwatch clock;
  for (auto _ : state) {
    const long rounds = 1 << 22;
    on_threads(threads, [&](int) { fma_loop(rounds); });
    flops += 2.0 * lanes * chains * rounds * threads;
  }
  state.counters["GFLOP/s"] = flops / clock.seconds() / 1e9;
}

void BM_eigen_gemm(benchmark::State& state) {
  const int threads = int(state.range(0)), n = 1024;
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  Eigen::setNbThreads(threads);
  Stopwatch clock;
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      2.0 * n * n * double(n) * double(state.iterations()) / clock.seconds() / 1e9;
  Eigen::setNbThreads(0);
}

BENCHMARK(BM_fma_peak)
    ->Name("ceiling/fma_peak")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_eigen_gemm)
    ->Name("ceiling/eigen_gemm_1024")
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace alibi_bench
