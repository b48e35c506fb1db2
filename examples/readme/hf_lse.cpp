// README, "Conventions": our lse against the log-sum-exp of Hugging Face BLOOM's and MPT's
// logits, computed here from their definitions (bias m * t and m * (t - S + 1), added unscaled
// after q.k / sqrt(D), causal).
#include "batches.hpp"

int main() {
  using readme::index_t;
  const index_t b = 0, S = 50, H = 4, D = 16;
  const std::vector<float> q = readme::values(S * H * D, 0.23f), k = readme::values(S * H * D, 0.41f),
                           v = readme::values(S * H * D, 0.09f);
  std::vector<float> out(q.size()), lse(H * S);
  alibi::attention(alibi::make_view(q.data(), 1, S, H, D), alibi::make_view(k.data(), 1, S, H, D),
                   alibi::make_view(v.data(), 1, S, H, D), alibi::make_view(out.data(), 1, S, H, D),
                   {}, lse.data());
  const std::vector<float> slopes = alibi::slopes(int(H));
  double error = 0;
  for (index_t h = 0; h < H; ++h)
    for (index_t p = 0; p < S; ++p) {
      // [readme]
      // Row p of head h: HF BLOOM's and MPT's log-sum-exp from ours (m = slopes[h], causal).
      const float m = slopes[h];
      const float lse_bloom = lse[(b * H + h) * S + p] + m * float(p);
      const float lse_mpt = lse[(b * H + h) * S + p] - m * float(S - 1 - p);
      // [/readme]
      double bloom = 0, mpt = 0;
      for (index_t t = 0; t <= p; ++t) {
        double dot = 0;
        for (index_t d = 0; d < D; ++d) dot += double(q[(p * H + h) * D + d]) * k[(t * H + h) * D + d];
        const double scaled = dot / std::sqrt(double(D));
        bloom += std::exp(scaled + double(m) * double(t));
        mpt += std::exp(scaled + double(m) * double(t - S + 1));
      }
      error = std::fmax(error, std::fabs(std::log(bloom) - double(lse_bloom)));
      error = std::fmax(error, std::fabs(std::log(mpt) - double(lse_mpt)));
    }
  std::printf("lse against BLOOM's and MPT's log-sum-exp: max difference %.2e\n", error);
  return error < 1e-4 ? 0 : 1;
}
