// What a consumer's program does with alibi: one call, checked against the reference, so a
// broken install or include path fails here rather than in someone's engine.
#include <alibi/alibi.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {
// Deterministic q, k and v, the same for the check and the timing.
void fill_inputs(std::vector<float>& q, std::vector<float>& k, std::vector<float>& v) {
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = std::sin(0.37f * float(i));
    k[i] = std::cos(0.11f * float(i));
    v[i] = std::sin(0.05f * float(i) + 1.0f);
  }
}

// `consumer --speed`: alibi_bench's headline prefill case (S 2048, H 8, D 64, causal, float, one
// thread, every key visited), the median of 7 calls in GFLOP/s as the bench counts them, to set
// beside `alibi_bench --benchmark_filter=fused/float/S:2048/H:8/Hkv:8/D:64/causal:1/threads:1`:
// what a consumer's own build of the header gets.
int speed() {
  const alibi::index_t seq = 2048, heads = 8, dim = 64;
  std::vector<float> q(seq * heads * dim), k(q.size()), v(q.size()), out(q.size());
  fill_inputs(q, k, v);
  const auto view = [&](std::vector<float>& x) {
    return alibi::make_view(x.data(), 1, seq, heads, dim);
  };
  alibi::Params params;
  params.num_threads = 1;
  params.tail_tolerance = 0;
  std::vector<double> seconds;
  for (int i = 0; i < 8; ++i) {
    const auto start = std::chrono::steady_clock::now();
    alibi::attention(view(q), view(k), view(v), view(out), params);
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    if (i > 0) seconds.push_back(took.count());  // the first call warms up
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  const double flops = 2.0 * double(seq) * double(seq) * double(dim) * double(heads);
  std::printf("consumer fused S 2048, H 8, D 64, causal, 1 thread: %.2f ms, %.1f GFLOP/s\n",
              median * 1e3, flops / median / 1e9);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--speed") == 0) return speed();
  const alibi::index_t seq = 40, heads = 4, dim = 16;
  std::vector<float> q(seq * heads * dim), k(q.size()), v(q.size()), out(q.size()), ref(q.size());
  fill_inputs(q, k, v);
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
