// README, "Batches and padding": the encoder batch packed without padding, forward and backward.
// Each sequence is checked against the reference on it alone.
#include "batches.hpp"

int main() {
  using readme::index_t;
  const index_t total = 217, H = 4, D = 32;
  std::vector<float> q_data = readme::values(total * H * D, 0.29f),
                     k_data = readme::values(q_data.size(), 0.13f),
                     v_data = readme::values(q_data.size(), 0.07f), out_data(q_data.size()),
                     dout_data = readme::values(q_data.size(), 0.19f), dq_data(q_data.size()),
                     dk_data(q_data.size()), dv_data(q_data.size());
  const auto view = [&](std::vector<float>& x) { return alibi::make_view(x.data(), 1, total, H, D); };
  auto q = view(q_data), k = view(k_data), v = view(v_data), out = view(out_data);
  auto dout = view(dout_data), dq = view(dq_data), dk = view(dk_data), dv = view(dv_data);
  std::vector<float> lse(H * total);
  // [readme]
  // The same three sentences packed without padding: q, k, v and out are [1, 217, H, D].
  const std::vector<alibi::index_t> cu_seqlens = {0, 128, 205, 217};
  alibi::Params params;
  params.causal = false;
  alibi::attention_varlen(q, k, v, cu_seqlens, cu_seqlens, out, params, lse.data());
  alibi::attention_varlen_backward(q, k, v, out, dout, lse.data(), cu_seqlens, cu_seqlens, dq, dk,
                                   dv, params);
  // [/readme]
  float error = 0;
  for (std::size_t s = 0; s + 1 < cu_seqlens.size(); ++s) {
    const index_t n = cu_seqlens[s + 1] - cu_seqlens[s], at = cu_seqlens[s] * H * D;
    error = std::fmax(error, readme::row_error(q_data.data() + at, k_data.data() + at,
                                               v_data.data() + at, out_data.data() + at, n, n, H,
                                               D, params));
  }
  float gradients = 0;
  for (float x : dq_data) gradients += std::fabs(x);
  std::printf("packed: max |sequence - sentence alone| = %.2e, sum |dq| = %.3f\n", double(error),
              double(gradients));
  return error < 1e-4f && std::isfinite(gradients) && gradients > 0 ? 0 : 1;
}
