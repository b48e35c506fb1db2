// The README's first usage example as a program: ctest builds and runs it, and
// tests/readme_blocks.cmake checks that README.md shows exactly the lines between the markers.
#include <alibi/alibi.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  const alibi::index_t B = 2, Sq = 64, Sk = 96, Hq = 16, Hkv = 4, D = 64;
  std::vector<float> q_data(B * Sq * Hq * D), k_data(B * Sk * Hkv * D), v_data(k_data.size()),
      out_data(q_data.size());
  for (std::size_t i = 0; i < q_data.size(); ++i) q_data[i] = std::sin(0.1f * float(i));
  for (std::size_t i = 0; i < k_data.size(); ++i) {
    k_data[i] = std::cos(0.3f * float(i));
    v_data[i] = std::sin(0.7f * float(i));
  }
  // [readme]
  // q [B, Sq, Hq, D], k and v [B, Sk, Hkv, D], out [B, Sq, Hq, D]; contiguous here, any strides
  // allowed; Hq a multiple of Hkv (GQA)
  auto q = alibi::make_view(q_data.data(), B, Sq, Hq, D);
  auto k = alibi::make_view(k_data.data(), B, Sk, Hkv, D);
  auto v = alibi::make_view(v_data.data(), B, Sk, Hkv, D);
  auto out = alibi::make_view(out_data.data(), B, Sq, Hq, D);

  alibi::Params params;                 // causal, slopes(Hq), scale 1/sqrt(D), all threads
  std::vector<float> lse(B * Hq * Sq);  // optional: log-sum-exp of each row, [B, Hq, Sq]
  alibi::attention(q, k, v, out, params, lse.data());
  // [/readme]
  std::vector<float> expected(out_data.size());
  alibi::reference::attention(q, k, v, alibi::make_view(expected.data(), B, Sq, Hq, D), params);
  float error = 0;
  for (std::size_t i = 0; i < expected.size(); ++i)
    error = std::fmax(error, std::fabs(out_data[i] - expected[i]));
  std::printf("usage: max |fused - reference| = %.2e\n", double(error));
  return error < 1e-4f ? 0 : 1;
}
