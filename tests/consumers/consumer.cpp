// What a consumer's program does with alibi: one call, checked against the reference, so a
// broken install or include path fails here rather than in someone's engine.
#include <alibi/alibi.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

int main() {
  const alibi::index_t seq = 40, heads = 4, dim = 16;
  std::vector<float> q(seq * heads * dim), k(q.size()), v(q.size()), out(q.size()), ref(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.37f * float(i));
    k[i] = std::cos(0.11f * float(i));
    v[i] = std::sin(0.05f * float(i) + 1.0f);
  }
  const auto view = [&](std::vector<float>& x) {
    return alibi::make_view(x.data(), 1, seq, heads, dim);
  };
  alibi::attention(view(q), view(k), view(v), view(out));
  alibi::reference::attention(view(q), view(k), view(v), view(ref));
  float err = 0;
  for (std::size_t i = 0; i < q.size(); ++i) err = std::fmax(err, std::fabs(out[i] - ref[i]));
  std::printf("alibi %d.%d.%d: max |fused - reference| = %g\n", ALIBI_VERSION_MAJOR,
              ALIBI_VERSION_MINOR, ALIBI_VERSION_PATCH, double(err));
  const std::string info = alibi::build_info();
  std::printf("%s\n", info.c_str());
#ifdef ALIBI_CONSUMER_NATIVE
  // Linked with alibi::native: the build must use every instruction set build_info can detect.
  if (info.find("unused by this build") != std::string::npos) return 1;
#endif
  return err < 1e-5f ? 0 : 1;
}
