// alibi_bench: Google Benchmark with a headline. With no arguments it runs a short set of cases
// (the README's demo); with any argument it behaves as a plain Google Benchmark binary
// (--benchmark_filter=. runs everything, --benchmark_out=FILE writes JSON).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {
const char* const headline_filter =
    "--benchmark_filter=^(fused/float/S:(512|2048)/H:8/D:64/causal:1/threads:(1|2)|"
    "reference/float/)";
}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  std::string filter = headline_filter, min_time = "--benchmark_min_time=0.2";
  if (argc == 1) {
    std::printf(
        "alibi_bench headline: causal ALiBi attention, B = 1, H = 8, D = 64, float.\n"
        "Run with --benchmark_filter=. for every case.\n\n");
    args.push_back(&filter[0]);
    args.push_back(&min_time[0]);
  }
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
