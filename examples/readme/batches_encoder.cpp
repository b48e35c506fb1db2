// README, "Batches and padding": an encoder (bidirectional) batch, right-padded. Each row is
// checked against the reference on that sentence alone.
#include "batches.hpp"

int main() {
  using readme::index_t;
  const index_t B = 3, S = 128, H = 4, D = 32;
  std::vector<float> q_data = readme::values(B * S * H * D, 0.29f),
                     k_data = readme::values(q_data.size(), 0.13f),
                     v_data = readme::values(q_data.size(), 0.07f), out_data(q_data.size());
  auto q = alibi::make_view(q_data.data(), B, S, H, D);
  auto k = alibi::make_view(k_data.data(), B, S, H, D);
  auto v = alibi::make_view(v_data.data(), B, S, H, D);
  auto out = alibi::make_view(out_data.data(), B, S, H, D);
  // [readme]
  // Three sentences of 128, 77 and 12 tokens, right-padded into [3, 128, H, D], bidirectional.
  alibi::Params params;
  params.causal = false;
  params.seqlens_q = params.seqlens_k = {128, 77, 12};
  alibi::attention(q, k, v, out, params);
  // [/readme]
  alibi::Params alone;
  alone.causal = false;
  float error = 0;
  for (index_t b = 0; b < B; ++b) {
    const index_t n = params.seqlens_q[std::size_t(b)], at = b * S * H * D;
    error = std::fmax(error, readme::row_error(q_data.data() + at, k_data.data() + at,
                                               v_data.data() + at, out_data.data() + at, n, n, H,
                                               D, alone));
  }
  std::printf("encoder batch: max |row - sentence alone| = %.2e\n", double(error));
  return error < 1e-4f ? 0 : 1;
}
