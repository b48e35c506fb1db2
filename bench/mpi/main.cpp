// alibi_bench_mpi: alibi::mpi::attention under mpirun. Every rank runs the same cases with a
// fixed iteration count (the calls are collective); rank 0 reports. Counters: bytes of keys and
// values sent per rank (mean and the busiest rank's), 64-key blocks left out, tokens/s, the load
// imbalance (the busiest rank's keys visited over the mean), and max_diff against
// single-process alibi::attention of the whole sequence relative to max |v| (rank 0 computes it
// once per case). S must be a multiple of 2P.
//
//     mpirun -np 4 --oversubscribe -x OMP_NUM_THREADS=1 ./alibi_bench_mpi
//     mpirun -np 1 ./alibi_bench_mpi --benchmark_filter=single   # the single process, all cores
#include <alibi/alibi.hpp>
#include <alibi/mpi.hpp>

#include <benchmark/benchmark.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

using alibi::index_t;

constexpr index_t heads = 8, head_dim = 64;

int rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int ranks() {
  int p = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  return p;
}

/// MPI_Barrier without spinning (a spinning rank would take a core from the others).
void barrier() {
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  std::vector<MPI_Request> requests{request};
  alibi::detail::mpi::wait_all(requests);
}

/// The whole sequence [1, S, 8, 64] of q, k and v, normal(0, 1), the same on every rank.
struct Sequence {
  index_t seq;
  std::vector<float> q, k, v;
  explicit Sequence(index_t s) : seq(s), q(std::size_t(s * heads * head_dim)), k(q.size()), v(q.size()) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    for (auto* x : {&q, &k, &v})
      for (float& e : *x) e = normal(rng);
  }
  alibi::TensorView<const float> view(const std::vector<float>& x, index_t begin, index_t n) const {
    return alibi::make_view(x.data() + begin * heads * head_dim, 1, n, heads, head_dim);
  }
};

const Sequence& sequence(index_t s) {
  static std::map<index_t, Sequence> cache;
  auto it = cache.find(s);
  if (it == cache.end()) it = cache.emplace(s, Sequence(s)).first;
  return it->second;
}

/// Single-process attention of the whole sequence, computed once per length (rank 0 only).
const std::vector<float>& single_result(index_t s) {
  static std::map<index_t, std::vector<float>> cache;
  auto it = cache.find(s);
  if (it == cache.end()) {
    const Sequence& x = sequence(s);
    std::vector<float> out(x.q.size());
    alibi::attention<float>(x.view(x.q, 0, s), x.view(x.k, 0, s), x.view(x.v, 0, s),
                            alibi::make_view(out.data(), 1, s, heads, head_dim));
    it = cache.emplace(s, std::move(out)).first;
  }
  return it->second;
}

/// Ring prefill, causal, slopes(8): args S, skip (1: default tail tolerance, 0: none), layout
/// (0 contiguous, 1 zigzag).
void mpi_prefill(benchmark::State& state) {
  const index_t S = state.range(0);
  const bool skip = state.range(1) != 0, zigzag = state.range(2) != 0;
  const int P = ranks(), me = rank();
  const Sequence& x = sequence(S);
  // Rank r's slice: contiguous, or its two zigzag chunks (copied together).
  const index_t n = S / P, chunk = n / 2;
  std::vector<index_t> rows;
  if (!zigzag) {
    for (index_t i = 0; i < n; ++i) rows.push_back(me * n + i);
  } else {
    for (index_t i = 0; i < chunk; ++i) rows.push_back(me * chunk + i);
    for (index_t i = 0; i < n - chunk; ++i) rows.push_back(P * chunk + (P - 1 - me) * (n - chunk) + i);
  }
  const index_t row = heads * head_dim;
  std::vector<float> q(std::size_t(n * row)), k(q.size()), v(q.size()), out(q.size());
  for (index_t i = 0; i < n; ++i) {
    const index_t at = rows[std::size_t(i)] * row;
    std::copy_n(x.q.data() + at, row, q.data() + i * row);
    std::copy_n(x.k.data() + at, row, k.data() + i * row);
    std::copy_n(x.v.data() + at, row, v.data() + i * row);
  }
  alibi::Params params;
  if (!skip) params.tail_tolerance = 0;
  alibi::mpi::Stats stats;
  alibi::AttentionStats visited;
  params.stats = &visited;
  for (auto _ : state) {
    barrier();
    alibi::mpi::attention<float>(MPI_COMM_WORLD, alibi::make_view(q.data(), 1, n, heads, head_dim),
                                 alibi::make_view(k.data(), 1, n, heads, head_dim),
                                 alibi::make_view(v.data(), 1, n, heads, head_dim),
                                 alibi::make_view(out.data(), 1, n, heads, head_dim), params,
                                 nullptr, &stats, zigzag ? alibi::mpi::Layout::zigzag
                                                         : alibi::mpi::Layout::contiguous);
    barrier();  // the call's time is the slowest rank's
  }
  // Every rank's out against the single process's rows, gathered at rank 0.
  double diff = 0, vmax = 0;
  if (me == 0) {
    const std::vector<float>& single = single_result(S);
    for (float e : x.v) vmax = std::max(vmax, double(std::fabs(e)));
    std::vector<float> theirs(out.size());
    for (int r = 0; r < P; ++r) {
      if (r == 0)
        theirs = out;
      else
        MPI_Recv(theirs.data(), int(theirs.size()), MPI_FLOAT, r, 0, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
      std::vector<index_t> their_rows;
      if (!zigzag) {
        for (index_t i = 0; i < n; ++i) their_rows.push_back(r * n + i);
      } else {
        for (index_t i = 0; i < chunk; ++i) their_rows.push_back(r * chunk + i);
        for (index_t i = 0; i < n - chunk; ++i)
          their_rows.push_back(P * chunk + (P - 1 - r) * (n - chunk) + i);
      }
      for (index_t i = 0; i < n; ++i)
        for (index_t e = 0; e < row; ++e)
          diff = std::max(diff, std::fabs(double(theirs[std::size_t(i * row + e)]) -
                                          double(single[std::size_t(their_rows[std::size_t(i)] * row + e)])));
    }
  } else {
    MPI_Send(out.data(), int(out.size()), MPI_FLOAT, 0, 0, MPI_COMM_WORLD);
  }
  std::int64_t mine[4] = {stats.bytes_sent, stats.blocks_skipped, stats.bytes_received,
                          visited.keys_visited};
  std::int64_t sum[4], max[4];
  MPI_Allreduce(mine, sum, 4, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(mine, max, 4, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  // Load balance: the busiest rank's keys visited (summed over its query rows) over the mean.
  state.counters["imbalance"] = double(max[3]) * P / double(sum[3] > 0 ? sum[3] : 1);
  state.counters["ranks"] = P;
  state.counters["sent/rank"] = double(sum[0]) / P;
  state.counters["sent_max"] = double(max[0]);
  state.counters["recv_max"] = double(max[2]);
  state.counters["skipped/rank"] = double(sum[1]) / P;
  state.counters["tokens/s"] =
      benchmark::Counter(double(S), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["max_diff"] = diff / (vmax > 0 ? vmax : 1);
}

/// The single process on the whole sequence (all of OMP_NUM_THREADS), for the wall-time bar.
void single(benchmark::State& state) {
  const index_t S = state.range(0);
  const Sequence& x = sequence(S);
  std::vector<float> out(x.q.size());
  for (auto _ : state)
    alibi::attention<float>(x.view(x.q, 0, S), x.view(x.k, 0, S), x.view(x.v, 0, S),
                            alibi::make_view(out.data(), 1, S, heads, head_dim));
  state.counters["tokens/s"] =
      benchmark::Counter(double(S), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  for (index_t s : {2048, 4096, 8192, 16384, 32768})
    for (int skip : {1, 0})
      benchmark::RegisterBenchmark("mpi_prefill", mpi_prefill)
          ->Args({s, skip, 0})
          ->ArgNames({"S", "skip", "zigzag"})
          ->Iterations(s >= 16384 ? 1 + skip : 4)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  for (index_t s : {8192, 32768})
    for (int skip : {1, 0})
      benchmark::RegisterBenchmark("mpi_prefill", mpi_prefill)
          ->Args({s, skip, 1})
          ->ArgNames({"S", "skip", "zigzag"})
          ->Iterations(s >= 16384 ? 1 + skip : 4)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  if (ranks() == 1)
    for (index_t s : {2048, 4096, 8192, 16384, 32768})
      benchmark::RegisterBenchmark("single", single)
          ->Arg(s)
          ->ArgName("S")
          ->Iterations(s >= 16384 ? 2 : 4)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
  benchmark::Initialize(&argc, argv);
  if (rank() == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    // The other ranks run the same cases in step, silently.
    struct Silent : benchmark::BenchmarkReporter {
      bool ReportContext(const Context&) override { return true; }
      void ReportRuns(const std::vector<Run>&) override {}
    } silent;
    benchmark::RunSpecifiedBenchmarks(&silent);
  }
  benchmark::Shutdown();
  MPI_Finalize();
  return 0;
}
