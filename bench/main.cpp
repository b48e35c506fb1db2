// alibi_bench: Google Benchmark with a headline. With no arguments it runs the short set of cases
// the README quotes (the ceilings, the fused kernel and the materialised Eigen attention at the
// bar's shapes, a decode step) and prints one median line per case and a summary
// (headline.hpp); with any argument it is a plain Google Benchmark binary
// (--benchmark_filter=. runs every case, --benchmark_out=FILE writes JSON for bench/plot.sh).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "headline.hpp"

namespace {
const char* const headline_filter =
    "--benchmark_filter=^(ceiling/|"
    "(fused|materialised_eigen)/float/S:2048/H:8/Hkv:8/D:64/causal:1/threads:[12]/|"
    "fused/float/S:4096/H:32/Hkv:32/D:128/causal:1/threads:2/|"
    "decode/float/Hq:32/Hkv:8/D:128/context:131072/threads:2/)";

void print_help(const char* program) {
  std::printf(
      "usage: %s [--help] [Google Benchmark flags]\n\n"
      "With no arguments: the headline, about a minute. The ceilings of this machine (FMA peak,\n"
      "Eigen's 1024^3 sgemm, the memory triad), fused prefill against the materialised Eigen\n"
      "attention (S 2048, H 8, D 64, causal, 1 and 2 threads), fused at S 4096, H 32, D 128, and\n"
      "a decode step against 128k cached keys with and without the tail skip; 3 repetitions,\n"
      "one median line per case, then a summary and the build's instruction set.\n\n"
      "With arguments, a plain Google Benchmark binary:\n"
      "  --benchmark_filter=.                 every case (tens of minutes)\n"
      "  --benchmark_filter='^documents/'     packed (varlen) vs padded vs per-document calls\n"
      "  --benchmark_list_tests               the names of all cases\n"
      "  --benchmark_out=FILE --benchmark_out_format=json   for bench/plot.sh\n"
      "  --benchmark_repetitions=N --benchmark_report_aggregates_only=true\n"
      "Run it alone on the machine: other work changes every figure.\n"
      "Build: %s\n",
      program, alibi::build_info().c_str());
}
}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      print_help(argv[0]);
      return 0;
    }
  std::vector<char*> args(argv, argv + argc);
  std::string filter = headline_filter, repetitions = "--benchmark_repetitions=3",
              aggregates = "--benchmark_report_aggregates_only=true";
  const bool headline = argc == 1;
  if (headline) {
    std::printf(
        "alibi_bench headline: causal ALiBi attention, B = 1, float; medians of 3 runs (--help "
        "for more).\n"
        "fused: prefill visiting every key; decode: one token against 128k cached keys, skip:1 "
        "with the default tail skip, skip:0 without. Fractions are of this machine's ceilings "
        "at the same thread count.\n");
    args.push_back(&filter[0]);
    args.push_back(&repetitions[0]);
    args.push_back(&aggregates[0]);
  }
  int count = static_cast<int>(args.size());
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  // In the JSON's context too: the plot scripts name the machine from it (bench/machine.awk).
  benchmark::AddCustomContext("alibi_build", alibi::build_info());
  if (headline) {
    alibi_bench::HeadlineReporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
  } else {
    benchmark::RunSpecifiedBenchmarks();
  }
  benchmark::Shutdown();
  return 0;
}
