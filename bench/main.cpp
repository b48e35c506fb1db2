// alibi_bench: Google Benchmark with a headline. With no arguments it runs the short set of cases
// the README quotes (the ceilings, the fused kernel and the materialised Eigen attention at the
// bar's shapes); with any argument it is a plain Google Benchmark binary
// (--benchmark_filter=. runs every case, --benchmark_out=FILE writes JSON for bench/plot.sh).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <vector>

namespace {
const char* const headline_filter =
    "--benchmark_filter=^(ceiling/|"
    "(fused|materialised_eigen)/float/S:2048/H:8/Hkv:8/D:64/causal:1/threads:[12]/|"
    "fused/float/S:4096/H:32/Hkv:32/D:128/causal:1/threads:2/|"
    "decode/float/Hq:32/Hkv:8/D:128/context:131072/threads:2/)";
}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  std::string filter = headline_filter, repetitions = "--benchmark_repetitions=3",
              aggregates = "--benchmark_report_aggregates_only=true";
  if (argc == 1) {
    std::printf(
        "alibi_bench headline: causal ALiBi attention, B = 1, float; medians of 3 runs.\n"
        "fused: prefill visiting every key; decode: one token against a 128k cache, skip:1 with\n"
        "the default tail skip, skip:0 without.\n"
        "of_FMA_peak and of_GEMM: the fraction of this machine's FMA peak and of Eigen's 1024^3\n"
        "sgemm at the same thread count. Run with --benchmark_filter=. for every case.\n\n");
    args.push_back(&filter[0]);
    args.push_back(&repetitions[0]);
    args.push_back(&aggregates[0]);
  }
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
