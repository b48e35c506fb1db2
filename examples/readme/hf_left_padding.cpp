// README, "Conventions": a Hugging Face batch, left-padded, in one call without copying. Each
// row's tokens are checked against the reference on them alone.
#include "batches.hpp"

int main() {
  using readme::index_t;
  const index_t B = 2, S = 64, H = 4, D = 32;
  const std::vector<index_t> pad = {0, 24};  // row 1: 24 padding tokens, then 40 real ones
  std::vector<float> q_data = readme::values(B * S * H * D, 0.31f),
                     k_data = readme::values(q_data.size(), 0.17f),
                     v_data = readme::values(q_data.size(), 0.03f), out_data(q_data.size());
  // [readme]
  // HF's [B, S] batch, left-padded: row b's tokens are [pad[b], S). As [1, B * S] rows, each
  // batch row is two packed sequences: its padding (attending only itself), then its tokens.
  const auto flat = [&](std::vector<float>& x) { return alibi::make_view(x.data(), 1, B * S, H, D); };
  std::vector<alibi::index_t> cu_seqlens = {0};
  for (alibi::index_t b = 0; b < B; ++b) {
    cu_seqlens.push_back(b * S + pad[b]);
    cu_seqlens.push_back((b + 1) * S);
  }
  alibi::attention_varlen(flat(q_data), flat(k_data), flat(v_data), cu_seqlens, cu_seqlens,
                          flat(out_data));
  // [/readme]
  float error = 0;
  for (index_t b = 0; b < B; ++b) {
    const index_t n = S - pad[std::size_t(b)], at = (b * S + pad[std::size_t(b)]) * H * D;
    error = std::fmax(error, readme::row_error(q_data.data() + at, k_data.data() + at,
                                               v_data.data() + at, out_data.data() + at, n, n, H,
                                               D, {}));
  }
  std::printf("left-padded batch: max |row - its tokens alone| = %.2e\n", double(error));
  return error < 1e-4f ? 0 : 1;
}
