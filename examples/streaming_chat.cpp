// A multi-turn session against a growing KV cache: each turn prefills the user's tokens, then
// decodes a reply token by token, as an inference engine's attention layer would (random
// activations stand in for a model: the point is the attention path). Prints prefill and decode
// tokens/s and the cache's bytes as the context grows past 100k tokens; ALiBi's tail skip keeps
// the decode rate flat while the context grows.
//
//     streaming_chat            # 6 turns of 20000 prompt tokens + 64 decoded: ~120k context
//     streaming_chat --quick    # 3 short turns (what ctest runs)
#include <alibi/alibi.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Random activations for n tokens of `heads` heads of `dim`.
std::vector<float> activations(std::mt19937& rng, alibi::index_t n, alibi::index_t heads,
                               alibi::index_t dim) {
  std::normal_distribution<float> normal;
  std::vector<float> x(std::size_t(n * heads * dim));
  for (float& e : x) e = normal(rng);
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear as they come, also through a pipe
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "usage: alibi_streaming_chat [--quick] [--help]\n\n"
          "A multi-turn session against a growing KV cache (Hq 32, Hkv 8, D 128): each turn\n"
          "prefills the prompt, then decodes a reply token by token; prints prefill and decode\n"
          "tokens/s and the cache's size per turn.\n\n"
          "  (no flag)  6 turns of 20000 prompt tokens + 64 decoded, to about 120k tokens of\n"
          "             context (minutes on 2 cores)\n"
          "  --quick    3 turns of 2000 + 16 (what ctest runs; not comparable to the README)\n"
          "  --help     this text\n");
      return 0;
    } else {
      std::fprintf(stderr, "alibi_streaming_chat: unknown flag %s (try --help)\n", argv[i]);
      return 2;
    }
  }
  std::printf("%s\n", alibi::build_info().c_str());
  if (quick)
    std::printf("--quick: short turns; these rates are not comparable to the README's table\n");
  const int turns = quick ? 3 : 6;
  const alibi::index_t prompt = quick ? 2000 : 20000, reply = quick ? 16 : 64;
  const alibi::index_t q_heads = 32, kv_heads = 8, dim = 128;

  std::mt19937 rng(1);
  alibi::KVCache<float> cache(1, kv_heads, dim);
  alibi::Params params;  // causal, slopes(32), the default tail skip, all threads
  double checksum = 0;
  std::printf("%5s %9s %16s %16s %12s\n", "turn", "context", "prefill tok/s", "decode tok/s",
              "cache MiB");
  for (int turn = 1; turn <= turns; ++turn) {
    // The user's message: append its keys and values, attend its queries (causal prefill).
    const auto q = activations(rng, prompt, q_heads, dim);
    const auto k = activations(rng, prompt, kv_heads, dim),
               v = activations(rng, prompt, kv_heads, dim);
    std::vector<float> out(q.size());
    auto start = Clock::now();
    cache.append(alibi::make_view(k.data(), 1, prompt, kv_heads, dim),
                 alibi::make_view(v.data(), 1, prompt, kv_heads, dim));
    alibi::attention(alibi::make_view(q.data(), 1, prompt, q_heads, dim), cache,
                     alibi::make_view(out.data(), 1, prompt, q_heads, dim), params);
    const double prefill = double(prompt) / seconds_since(start);
    checksum += out[0];

    // The reply, one token at a time against the whole history.
    start = Clock::now();
    for (alibi::index_t t = 0; t < reply; ++t) {
      const auto qt = activations(rng, 1, q_heads, dim);
      const auto kt = activations(rng, 1, kv_heads, dim), vt = activations(rng, 1, kv_heads, dim);
      std::vector<float> step(qt.size());
      cache.append(alibi::make_view(kt.data(), 1, 1, kv_heads, dim),
                   alibi::make_view(vt.data(), 1, 1, kv_heads, dim));
      alibi::attention(alibi::make_view(qt.data(), 1, 1, q_heads, dim), cache,
                       alibi::make_view(step.data(), 1, 1, q_heads, dim), params);
      checksum += step[0];
    }
    const double decode = double(reply) / seconds_since(start);
    std::printf("%5d %9lld %16.0f %16.1f %12.1f\n", turn, static_cast<long long>(cache.length(0)),
                prefill, decode, double(cache.bytes()) / (1 << 20));
  }
  std::printf("checksum %.6f\n", checksum);
  return std::isfinite(checksum) ? 0 : 1;
}
