// Several threads calling the library at once on shared const inputs and one const KV cache:
// every call must give the result it gives alone (readers of const data never write it). Run
// under ThreadSanitizer by the tsan preset (std::threads inside the calls too).
#include "test_support.hpp"

#include <iterator>
#include <thread>

#include <catch2/catch.hpp>

using namespace alibi_test;

TEST_CASE("concurrent calls on shared const inputs and one const cache", "[threads]") {
  // Long enough for the tail skip (key norms measured per call) and for split decode.
  const Shape s{2, 4, 2048, 4, 2, 16, 16};
  const auto q = random_values<float>(s.q_size(), 501), k = random_values<float>(s.k_size(), 502),
             v = random_values<float>(s.v_size(), 503);
  alibi::PagedKVCache filled(alibi::PagedKVCache::Options(s.heads_kv, s.head_dim));
  std::vector<alibi::SequenceId> seqs;
  const std::size_t row_k = std::size_t(s.seq_k * s.heads_kv * s.head_dim);
  for (index_t b = 0; b < s.batch; ++b) {
    seqs.push_back(filled.add_sequence());
    filled.append(seqs.back(),
                  alibi::make_view<const float>(k.data() + b * row_k, 1, s.seq_k, s.heads_kv,
                                                s.head_dim),
                  alibi::make_view<const float>(v.data() + b * row_k, 1, s.seq_k, s.heads_kv,
                                                s.value_dim));
  }
  const alibi::PagedKVCache& cache = filled;

  struct Call {
    bool causal, through_cache;
  };
  const Call calls[] = {{true, false}, {false, false}, {true, true}, {false, true}};
  const auto run = [&](const Call& c, std::vector<float>& out) {
    alibi::Params p;
    p.causal = c.causal;
    p.num_threads = 2;  // each call runs worker threads of its own as well
    if (c.through_cache)
      alibi::attention<float>(q_view(s, q.data()), cache, seqs, out_view(s, out.data()), p);
    else
      alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                       out_view(s, out.data()), p);
  };
  std::vector<std::vector<float>> alone;
  for (const Call& c : calls) {
    alone.emplace_back(s.out_size());
    run(c, alone.back());
  }
  constexpr int per_call = 2;
  std::vector<std::vector<float>> outs(std::size(calls) * per_call,
                                       std::vector<float>(s.out_size()));
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < outs.size(); ++t)
    threads.emplace_back([&, t] { run(calls[t % std::size(calls)], outs[t]); });
  for (auto& thread : threads) thread.join();
  for (std::size_t t = 0; t < outs.size(); ++t) {
    INFO("thread " << t);
    CHECK(outs[t] == alone[t % std::size(calls)]);
  }
  // And the results are right: against the float64 oracle.
  alibi::Params p;
  const Expected e = oracle(s, q, k, v, p);
  for (std::size_t i = 0; i < e.out.size(); ++i)
    REQUIRE(alone[0][i] == Approx(e.out[i]).margin(1e-6));
}
