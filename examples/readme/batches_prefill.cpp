// README, "Batches and padding": a ragged prefill of two prompts, right-padded. Each row is
// checked against the reference on that prompt alone.
#include "batches.hpp"

int main() {
  using readme::index_t;
  const index_t B = 2, S = 300, H = 8, D = 32;
  std::vector<float> q_data = readme::values(B * S * H * D, 0.37f),
                     k_data = readme::values(q_data.size(), 0.11f),
                     v_data = readme::values(q_data.size(), 0.05f), out_data(q_data.size());
  auto q = alibi::make_view(q_data.data(), B, S, H, D);
  auto k = alibi::make_view(k_data.data(), B, S, H, D);
  auto v = alibi::make_view(v_data.data(), B, S, H, D);
  auto out = alibi::make_view(out_data.data(), B, S, H, D);
  // [readme]
  // Two prompts of 300 and 170 tokens, right-padded into one [2, 300, H, D] batch.
  alibi::Params params;
  params.seqlens_q = {300, 170};  // row b's real queries are [0, seqlens_q[b]) ...
  params.seqlens_k = {300, 170};  // ... and its real keys [0, seqlens_k[b])
  alibi::attention(q, k, v, out, params);  // padding rows: never read, out 0 (lse -inf)
  // [/readme]
  alibi::Params alone;
  float error = 0;
  for (index_t b = 0; b < B; ++b) {
    const index_t n = params.seqlens_q[std::size_t(b)], at = b * S * H * D;
    error = std::fmax(error, readme::row_error(q_data.data() + at, k_data.data() + at,
                                               v_data.data() + at, out_data.data() + at, n, n, H,
                                               D, alone));
  }
  std::printf("ragged prefill: max |row - prompt alone| = %.2e\n", double(error));
  return error < 1e-4f ? 0 : 1;
}
