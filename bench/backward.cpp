// Backward attention: the fused two-pass kernel against the materialised reference backward.
// FLOPs follow FlashAttention's convention: 2.5 times the forward's.
#include "support.hpp"

namespace alibi_bench {
namespace {

// Arguments: S, H, D, threads; causal.
template <bool Reference>
void BM_backward(benchmark::State& state) {
  const index_t s = state.range(0), heads = state.range(1), dim = state.range(2);
  Problem<float> p(s, heads, heads, dim);
  alibi::Params params;
  params.num_threads = int(state.range(3));
  std::vector<float> lse(std::size_t(s * heads)), dout = p.q, dq(p.q.size()), dk(p.k.size()),
                                                  dv(p.v.size()), dslopes(static_cast<std::size_t>(heads));
  alibi::attention(p.queries(), p.keys(), p.values(), p.output(), params, lse.data());
  const auto view = [&](std::vector<float>& x) {
    return alibi::make_view(x.data(), 1, s, heads, dim);
  };
  const alibi::TensorView<const float> out = p.output(), grad = view(dout);
  std::size_t extra = 0;
  Stopwatch clock;
  for (auto _ : state) {
    const std::size_t before = allocated_bytes();
    reset_peak();
    if (Reference)
      alibi::reference::attention_backward(p.queries(), p.keys(), p.values(), out, grad, lse.data(),
                                           view(dq), view(dk), view(dv), params, dslopes.data());
    else
      alibi::attention_backward(p.queries(), p.keys(), p.values(), out, grad, lse.data(), view(dq),
                                view(dk), view(dv), params, dslopes.data());
    extra = peak_allocated_bytes() - before;
    benchmark::DoNotOptimize(dq.data());
  }
  report(state, 2.5 * attention_flops(double(s), double(heads), double(dim), true), double(s),
         clock.seconds(), int(state.range(3)), extra);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"S", "H", "D", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
  for (long threads : {1, 2}) b->Args({2048, 8, 64, threads});
  b->Args({4096, 32, 128, 2});
}

BENCHMARK_TEMPLATE(BM_backward, false)->Name("backward/float/causal")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_backward, true)
    ->Name("backward_reference/float/causal")
    ->ArgNames({"S", "H", "D", "threads"})
    ->Args({2048, 8, 64, 1})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace alibi_bench
