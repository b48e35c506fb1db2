// The smallest complete alibi program: causal ALiBi attention over one sequence, checked against
// the materialised reference. Build: link alibi::alibi (CMake) or add -I<alibi>/include and Eigen.
#include <alibi/alibi.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear as they come, also through a pipe
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "usage: alibi_quickstart [--help]\n\nRuns causal ALiBi attention over 256 tokens x 8 "
          "heads and checks it against the\nmaterialised reference; exits 1 if they disagree. "
          "No other flags.\n");
      return 0;
    }
    std::fprintf(stderr, "alibi_quickstart: unknown flag %s (try --help)\n", argv[i]);
    return 2;
  }
  std::printf("%s\n", alibi::build_info().c_str());
  const alibi::index_t batch = 1, seq = 256, heads = 8, head_dim = 64;
  std::vector<float> q(batch * seq * heads * head_dim), k(q.size()), v(q.size());
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = normal(rng);

  std::vector<float> out(q.size()), expected(q.size());
  alibi::Params params;  // causal, slopes(8), scale 1/sqrt(64)
  alibi::attention(alibi::make_view(q.data(), batch, seq, heads, head_dim),
                   alibi::make_view(k.data(), batch, seq, heads, head_dim),
                   alibi::make_view(v.data(), batch, seq, heads, head_dim),
                   alibi::make_view(out.data(), batch, seq, heads, head_dim), params);
  alibi::reference::attention(alibi::make_view(q.data(), batch, seq, heads, head_dim),
                              alibi::make_view(k.data(), batch, seq, heads, head_dim),
                              alibi::make_view(v.data(), batch, seq, heads, head_dim),
                              alibi::make_view(expected.data(), batch, seq, heads, head_dim),
                              params);

  float max_error = 0;
  for (std::size_t i = 0; i < out.size(); ++i)
    max_error = std::fmax(max_error, std::fabs(out[i] - expected[i]));
  std::printf("alibi %d.%d.%d: %lld tokens x %lld heads, max |fused - reference| = %.2e\n",
              ALIBI_VERSION_MAJOR, ALIBI_VERSION_MINOR, ALIBI_VERSION_PATCH,
              static_cast<long long>(seq), static_cast<long long>(heads), max_error);
  return max_error < 1e-4f ? 0 : 1;
}
