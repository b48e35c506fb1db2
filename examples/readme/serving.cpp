// README, "Serving": a system prompt stored once, forked into two sessions that decode in one
// call. Each row is checked against the reference over what the cache stores (read()), and the
// fork's sharing against bytes_used().
#include <alibi/alibi.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

#include "batches.hpp"

using readme::normal_values;

int main() {
  using alibi::index_t;
  const index_t n = 1000, Hq = 32, Hkv = 8, D = 128;
  const std::vector<float> kp = normal_values(n * Hkv * D, 1),
                           vp = normal_values(n * Hkv * D, 2), ka = normal_values(Hkv * D, 3),
                           va = normal_values(Hkv * D, 4), kb = normal_values(Hkv * D, 5),
                           vb = normal_values(Hkv * D, 6), q = normal_values(2 * Hq * D, 7);
  std::vector<float> o(2 * Hq * D);
  const auto k_prompt = alibi::make_view(kp.data(), 1, n, Hkv, D);
  const auto v_prompt = alibi::make_view(vp.data(), 1, n, Hkv, D);
  const auto k_a = alibi::make_view(ka.data(), 1, 1, Hkv, D);
  const auto v_a = alibi::make_view(va.data(), 1, 1, Hkv, D);
  const auto k_b = alibi::make_view(kb.data(), 1, 1, Hkv, D);
  const auto v_b = alibi::make_view(vb.data(), 1, 1, Hkv, D);
  const auto q_ab = alibi::make_view(q.data(), 2, 1, Hq, D);
  const auto out_ab = alibi::make_view(o.data(), 2, 1, Hq, D);
  // [readme]
  alibi::PagedKVCache cache(
      {/*kv_heads*/ 8, /*head_dim*/ 128, /*value_dim*/ 0, /*page_size*/ 64, alibi::KVFormat::int8});
  alibi::SequenceId system = cache.add_sequence();
  cache.append(system, k_prompt, v_prompt);  // [1, n, 8, 128], float, half or bfloat16
  alibi::SequenceId a = cache.fork(system), b = cache.fork(system);  // the prompt stored once
  cache.append(a, k_a, v_a);  // copies only a shared partial last page
  cache.append(b, k_b, v_b);
  alibi::attention(q_ab, cache, {a, b}, out_ab);  // q [2, Sq, 32, 128]: both in one call
  cache.release(system);                          // a and b keep the pages they share
  // [/readme]
  // 1000 tokens: 15 full pages shared, and a copy of the partial 16th for each session.
  const std::size_t pages = std::size_t(Hkv) * (16 + 1);
  float error = 0;
  const alibi::SequenceId seqs[] = {a, b};
  for (index_t r = 0; r < 2; ++r) {
    std::vector<float> k((n + 1) * Hkv * D), v(k.size()), want(Hq * D);
    cache.read(seqs[r], 0, n + 1, k.data(), v.data());
    alibi::reference::attention(alibi::make_view<const float>(q.data() + r * Hq * D, 1, 1, Hq, D),
                                alibi::make_view<const float>(k.data(), 1, n + 1, Hkv, D),
                                alibi::make_view<const float>(v.data(), 1, n + 1, Hkv, D),
                                alibi::make_view(want.data(), 1, 1, Hq, D));
    for (index_t i = 0; i < Hq * D; ++i)
      error = std::fmax(error, std::fabs(o[std::size_t(r * Hq * D + i)] - want[std::size_t(i)]));
  }
  std::printf("serving: max |row - reference over the cache| = %.2e, pages %zu (expected %zu)\n",
              double(error), cache.bytes_used() / cache.page_bytes(), pages);
  return error < 1e-4f && cache.bytes_used() == pages * cache.page_bytes() ? 0 : 1;
}
