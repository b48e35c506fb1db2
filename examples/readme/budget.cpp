// The README's memory-budget example as a program: a session of 6000 tokens in a 32 MiB cache
// (the full history would take 94 MiB); ctest builds and runs it, and check_readme.cmake checks
// that README.md shows exactly the lines between the markers. It checks the budget held, that
// eviction happened, and that the certificate is within the limit the call asked for.
#include <alibi/alibi.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  const alibi::index_t n = 6000, H = 32, D = 64;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> k_data(std::size_t(n * H * D)), v_data(k_data.size()), q_data(H * D),
      out_data(q_data.size());
  for (auto* x : {&k_data, &v_data, &q_data})
    for (float& e : *x) e = normal(rng);
  const auto k = alibi::make_view<const float>(k_data.data(), 1, n, H, D);
  const auto v = alibi::make_view<const float>(v_data.data(), 1, n, H, D);
  const auto q = alibi::make_view<const float>(q_data.data(), 1, 1, H, D);
  const auto out = alibi::make_view(out_data.data(), 1, 1, H, D);
  // [readme]
  alibi::PagedKVCache::Options options(/*kv_heads*/ 32, /*head_dim*/ 64);
  options.slopes = alibi::slopes(32);         // the query heads' slopes plan the keep distances
  options.max_bytes = std::size_t(32) << 20;  // 32 MiB, whatever the session's length
  alibi::PagedKVCache cache(options);
  alibi::SequenceId chat = cache.add_sequence();
  cache.append(chat, k, v);                   // per prompt or per token: the budget holds

  alibi::AttentionStats stats;
  alibi::Params params;
  params.stats = &stats;
  params.max_evicted_weight = 0x1p-24;  // throw alibi::BudgetExceeded above float round-off
  alibi::attention(q, cache, {chat}, out, params);  // stats.evicted_weight_bound: the certificate
  // [/readme]
  const bool evicted = cache.evicted_end(chat, 0) > 0;
  std::printf("budget: %.1f MiB held of %.1f, evicted %s, certificate %.3g\n",
              double(cache.bytes_used()) / (1 << 20), double(cache.max_bytes()) / (1 << 20),
              evicted ? "yes" : "no", stats.evicted_weight_bound);
  return cache.bytes_used() <= cache.max_bytes() && evicted && stats.evicted_weight_bound > 0 &&
                 stats.evicted_weight_bound <= 0x1p-24 && std::isfinite(out_data[0])
             ? 0
             : 1;
}
