// Extrapolation: the quick train-short-test-long experiment (examples/train), once, with the
// perplexity ratios as counters, so the bench measures extrapolation beside throughput.
#include <cmath>

#include "support.hpp"
#include "train/experiment.hpp"

namespace alibi_bench {
namespace {

void BM_extrapolation(benchmark::State& state) {
  const train::Language language(32, 1);
  for (auto _ : state) {
    train::Setup setup;
    setup.steps = 250;
    setup.eval_tokens = 8192;
    const train::Results results = train::extrapolation(language, setup);
    const auto ppl = [&](const char* scheme, int i) {
      return std::exp(results.losses.at(scheme)[std::size_t(i)]);
    };
    state.counters["alibi_16L/L"] = ppl("alibi", 4) / ppl("alibi", 0);
    state.counters["alibi_learned_16L/L"] = ppl("alibi_learned", 4) / ppl("alibi_learned", 0);
    state.counters["rotary_16L/L"] = ppl("rotary", 4) / ppl("rotary", 0);
    state.counters["sinusoidal_4L/L"] = ppl("sinusoidal", 2) / ppl("sinusoidal", 0);
    state.counters["nope_16L/L"] = ppl("nope", 4) / ppl("nope", 0);
    state.counters["alibi_ppl_16L"] = ppl("alibi", 4);
    state.counters["sinusoidal_ppl_16L"] = ppl("sinusoidal", 4);
    state.counters["nope_ppl_16L"] = ppl("nope", 4);
  }
}

BENCHMARK(BM_extrapolation)
    ->Name("extrapolation/quick/L:64")
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

}  // namespace
}  // namespace alibi_bench
