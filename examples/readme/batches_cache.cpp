// README, "Batches and padding": one decode call over sequences of a paged cache that add
// different numbers of tokens this step (right-padded q). Each row is checked against the
// reference over what the cache stores.
#include "batches.hpp"

int main() {
  using readme::index_t;
  const index_t Hq = 8, Hkv = 2, D = 32;
  alibi::PagedKVCache cache(alibi::PagedKVCache::Options{Hkv, D});
  const std::vector<index_t> lengths = {700, 90};
  std::vector<alibi::SequenceId> seqs;
  for (std::size_t b = 0; b < lengths.size(); ++b) {
    const std::vector<float> k = readme::values(lengths[b] * Hkv * D, 0.13f + 0.1f * float(b)),
                             v = readme::values(lengths[b] * Hkv * D, 0.07f);
    seqs.push_back(cache.add_sequence());
    cache.append(seqs.back(), alibi::make_view(k.data(), 1, lengths[b], Hkv, D),
                 alibi::make_view(v.data(), 1, lengths[b], Hkv, D));
  }
  std::vector<float> q_data = readme::values(2 * 4 * Hq * D, 0.29f), out_data(q_data.size());
  auto q = alibi::make_view(q_data.data(), 2, 4, Hq, D);
  auto out = alibi::make_view(out_data.data(), 2, 4, Hq, D);
  // [readme]
  // Sequence 0 checks 4 draft tokens this step, sequence 1 decodes 1: q is [2, 4, Hq, D],
  // right-padded; each row's tokens are already appended to the cache (its newest ones).
  alibi::Params params;
  params.seqlens_q = {4, 1};
  alibi::attention(q, cache, seqs, out, params);
  // [/readme]
  float error = 0;
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    const index_t n = lengths[b], nq = params.seqlens_q[b];
    std::vector<float> k(n * Hkv * D), v(k.size()), want(nq * Hq * D);
    cache.read(seqs[b], 0, n, k.data(), v.data());
    alibi::reference::attention(
        alibi::make_view<const float>(q_data.data() + b * 4 * Hq * D, 1, nq, Hq, D),
        alibi::make_view<const float>(k.data(), 1, n, Hkv, D),
        alibi::make_view<const float>(v.data(), 1, n, Hkv, D),
        alibi::make_view(want.data(), 1, nq, Hq, D));
    for (std::size_t i = 0; i < want.size(); ++i)
      error = std::fmax(error, std::fabs(out_data[b * 4 * Hq * D + i] - want[i]));
  }
  std::printf("cache decode, ragged queries: max |row - reference over the cache| = %.2e\n",
              double(error));
  return error < 1e-4f ? 0 : 1;
}
