// Packed documents of different lengths: one alibi::attention_varlen call, against the same
// documents right-padded to the longest (one alibi::attention call with seqlens_q / seqlens_k)
// and against one alibi::attention call per document. GFLOP/s count the useful work only (each
// document's own causal products), so the three compare directly.
#include <algorithm>
#include <random>

#include "support.hpp"

namespace alibi_bench {
namespace {

enum class Layout { packed, padded, per_document };

/// Seeded document lengths between 64 and 2048 tokens, about `total` tokens in all.
std::vector<index_t> document_lengths(index_t total) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<index_t> length(64, 2048);
  std::vector<index_t> lens;
  for (index_t sum = 0; sum < total;) {
    const index_t n = std::min(length(rng), total - sum);
    lens.push_back(n);
    sum += n;
  }
  return lens;
}

// Arguments: total tokens, H, D, threads.
template <Layout layout>
void BM_documents(benchmark::State& state) {
  const index_t total = state.range(0), heads = state.range(1), dim = state.range(2);
  const int threads = int(state.range(3));
  const std::vector<index_t> lens = document_lengths(total);
  const index_t docs = index_t(lens.size()), longest = *std::max_element(lens.begin(), lens.end());
  std::vector<index_t> cu{0};
  for (index_t n : lens) cu.push_back(cu.back() + n);
  // Packed: [1, total, H, D]; padded: [docs, longest, H, D].
  const index_t rows = layout == Layout::padded ? docs * longest : total;
  std::vector<float> q(std::size_t(rows * heads * dim)), k(q.size()), v(q.size()), out(q.size());
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = normal(rng);
  alibi::Params params;
  params.tail_tolerance = 0;  // every allowed key: the layouts do the same arithmetic
  params.num_threads = threads;
  if (layout == Layout::padded) params.seqlens_q = params.seqlens_k = lens;
  double flops = 0;
  for (index_t n : lens) flops += attention_flops(double(n), double(heads), double(dim), true);
  Stopwatch clock;
  for (auto _ : state) {
    if constexpr (layout == Layout::packed) {
      const auto view = [&](float* x) { return alibi::make_view(x, 1, total, heads, dim); };
      alibi::attention_varlen(alibi::TensorView<const float>(view(q.data())), view(k.data()),
                              view(v.data()), cu, cu, view(out.data()), params);
    } else if constexpr (layout == Layout::padded) {
      const auto view = [&](float* x) { return alibi::make_view(x, docs, longest, heads, dim); };
      alibi::attention(alibi::TensorView<const float>(view(q.data())), view(k.data()),
                       view(v.data()), view(out.data()), params);
    } else {
      for (index_t d = 0; d < docs; ++d) {
        const auto view = [&](float* x) {
          return alibi::make_view(x + cu[std::size_t(d)] * heads * dim, 1, lens[std::size_t(d)],
                                  heads, dim);
        };
        alibi::attention(alibi::TensorView<const float>(view(q.data())), view(k.data()),
                         view(v.data()), view(out.data()), params);
      }
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  report(state, flops, double(total), clock.seconds(), threads, 0);
  state.counters["documents"] = double(docs);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"tokens", "H", "D", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
  b->Args({16384, 8, 64, 2});
}

BENCHMARK_TEMPLATE(BM_documents, Layout::packed)->Name("documents/varlen")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_documents, Layout::padded)->Name("documents/padded")->Apply(shapes);
BENCHMARK_TEMPLATE(BM_documents, Layout::per_document)
    ->Name("documents/per_document")
    ->Apply(shapes);

}  // namespace
}  // namespace alibi_bench
