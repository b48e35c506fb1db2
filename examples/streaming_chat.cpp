// A multi-turn session against a growing paged KV cache: each turn prefills the user's tokens, then
// decodes a reply token by token, as an inference engine's attention layer would (random
// activations stand in for a model: the point is the attention path). Prints prefill and decode
// tokens/s and the cache's bytes as the context grows past 100k tokens; ALiBi's tail skip keeps
// the decode rate flat while the context grows. Under a memory budget the cache's bytes stay flat
// too, and every call prints what eviction could have changed (the certificate).
//
//     streaming_chat                      # 6 turns of 20000 + 64 tokens: ~120k context
//     streaming_chat --quick              # 3 turns of 2000 + 16 (what ctest runs)
//     streaming_chat --budget-mib 32 --tokens 1100000        # past 1M tokens in 32 MiB
//     streaming_chat --quick --budget-mib 12 --check         # ctest: budget and bound held
#include <alibi/alibi.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

const char* const usage =
    R"(usage: alibi_streaming_chat [--quick] [--tokens N] [--budget-mib N] [--check] [--help]

A multi-turn session against a growing KV cache (Hq 32, Hkv 8, D 128): each turn prefills the
prompt, then decodes a reply token by token; prints prefill and decode tokens/s, the cache's
size and (under a budget) the certificate per turn.

  (no flag)       6 turns of 20000 prompt tokens + 64 decoded, to about 120k tokens of context
                  (minutes on 2 cores)
  --quick         turns of 2000 + 16, 3 of them unless --tokens says otherwise (what ctest
                  runs; not comparable to the README)
  --tokens N      run turns until the context holds N tokens (the last turn is cut short)
  --budget-mib N  the cache holds at most N MiB (PagedKVCache::Options::max_bytes, planned for
                  slopes(32)): it evicts whole pages per kv head, its memory stays flat however
                  long the session, and each attention call certifies what eviction could have
                  changed (AttentionStats::evicted_weight_bound; the output is within about
                  2 x bound x max|v| of attention over the whole history). Prompts are then
                  prefilled 32 tokens at a time, so no prompt evicts keys its own queries still
                  need
  --check         exit 1 unless the cache stayed within its budget after every append, every
                  certificate was finite, and (up to 65536 tokens, where the example can keep a
                  copy of the whole history) the last decode step is within 2 x bound x max|v|
                  (plus float round-off) of dense float64 attention over that copy
  --help          this text
)";

struct Options {
  bool quick = false, check = false;
  long long tokens = 0, budget_mib = 0;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto number = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "alibi_streaming_chat: %s needs a value (try --help)\n", a.c_str());
        std::exit(2);
      }
      const std::string v = argv[++i];
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n <= 0) {
        std::fprintf(stderr, "alibi_streaming_chat: %s needs a positive integer, got '%s'\n",
                     a.c_str(), v.c_str());
        std::exit(2);
      }
      return n;
    };
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a == "--check") {
      o.check = true;
    } else if (a == "--tokens") {
      o.tokens = number();
    } else if (a == "--budget-mib") {
      o.budget_mib = number();
      if ((unsigned long long)(o.budget_mib) > (std::numeric_limits<std::size_t>::max() >> 20)) {
        std::fprintf(stderr, "alibi_streaming_chat: --budget-mib %lld MiB do not fit in size_t\n",
                     o.budget_mib);
        std::exit(2);
      }
    } else {
      std::fprintf(stderr, "alibi_streaming_chat: unknown flag %s (try --help)\n", a.c_str());
      std::exit(2);
    }
  }
  return o;
}

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

constexpr alibi::index_t q_heads = 32, kv_heads = 8, dim = 128;
// --check compares against a copy of the whole history: 8 KiB a token, 512 MiB at this many.
constexpr long long check_history_limit = 65536;

int run(const Options& o) {
  std::printf("%s\n", alibi::build_info().c_str());
  if (o.quick)
    std::printf("--quick: short turns; these rates are not comparable to the README's table\n");
  const alibi::index_t prompt = o.quick ? 2000 : 20000, reply = o.quick ? 16 : 64;
  const long long tokens = o.tokens > 0 ? o.tokens : (o.quick ? 3 : 6) * (prompt + reply);
  const bool compare = o.check && tokens <= check_history_limit;

  alibi::PagedKVCache::Options options(kv_heads, dim);
  if (o.budget_mib > 0) {
    options.max_bytes = std::size_t(o.budget_mib) << 20;
    options.slopes = alibi::slopes(q_heads);  // the query heads' slopes plan the keep distances
  }
  alibi::PagedKVCache cache(options);  // throws std::invalid_argument for a budget too small
  const alibi::SequenceId chat = cache.add_sequence();
  // Under a budget, prompts go in chunks of half a page: an append evicts before its attention
  // runs and the cache plans keep distances from the newest token, so a chunk's first query is
  // up to a chunk nearer the evicted keys. On the steepest kv head (slope 1/2, which keeps only
  // a page or two) a whole-page chunk costs exp(32) of certificate, half a page exp(16).
  const alibi::index_t chunk = o.budget_mib > 0 ? cache.page_size() / 2 : prompt;
  if (o.budget_mib > 0)
    std::printf("budget %lld MiB (the full history takes %.1f MiB at %lld tokens)\n", o.budget_mib,
                double(tokens) * kv_heads * dim * 2 * sizeof(float) / (1 << 20), tokens);

  std::mt19937 rng(1);
  alibi::AttentionStats stats;
  alibi::Params params;  // causal, slopes(32), the default tail skip, all threads
  params.stats = &stats;
  std::vector<float> k_all, v_all;  // the whole history, for --check's dense comparison
  std::vector<float> last_q, last_out;
  double checksum = 0, last_bound = 0;
  bool within_budget = true, finite_bounds = true;
  std::size_t peak = 0;
  const auto append = [&](const std::vector<float>& k, const std::vector<float>& v,
                          alibi::index_t n) {
    cache.append(chat, alibi::make_view(k.data(), 1, n, kv_heads, dim),
                 alibi::make_view(v.data(), 1, n, kv_heads, dim));
    peak = std::max(peak, cache.bytes_used());
    if (options.max_bytes > 0 && cache.bytes_used() > options.max_bytes) within_budget = false;
    if (compare) {
      k_all.insert(k_all.end(), k.begin(), k.end());
      v_all.insert(v_all.end(), v.begin(), v.end());
    }
  };
  // A turn prints its largest certificate: the one that bounds every output of the turn.
  const auto certify = [&](double* turn_bound) {
    if (!std::isfinite(stats.evicted_weight_bound)) finite_bounds = false;
    *turn_bound = std::max(*turn_bound, stats.evicted_weight_bound);
  };

  std::printf("%5s %9s %14s %14s %10s %14s %14s\n", "turn", "context", "prefill tok/s",
              "decode tok/s", "cache MiB", "prefill bound", "decode bound");
  auto session_start = Clock::now();
  for (int turn = 1; cache.length(chat) < tokens; ++turn) {
    const long long left = tokens - cache.length(chat);
    const alibi::index_t r = alibi::index_t(std::min<long long>(reply, left)),
                         p = alibi::index_t(std::min<long long>(prompt, left - r));
    double prefill_bound = 0, decode_bound = 0;

    // The user's message: append its keys and values, attend its queries (causal prefill).
    auto start = Clock::now();
    for (alibi::index_t at = 0, n = 0; at < p; at += n) {
      // Chunks end on multiples of the chunk (so on page boundaries): none straddles two pages.
      n = std::min(p - at, o.budget_mib > 0 ? chunk - cache.length(chat) % chunk : chunk);
      const auto q = activations(rng, n, q_heads, dim);
      const auto k = activations(rng, n, kv_heads, dim), v = activations(rng, n, kv_heads, dim);
      std::vector<float> out(q.size());
      append(k, v, n);
      alibi::attention(alibi::make_view(q.data(), 1, n, q_heads, dim), cache, {chat},
                       alibi::make_view(out.data(), 1, n, q_heads, dim), params);
      certify(&prefill_bound);
      checksum += out[0];
    }
    const double prefill = double(p) / seconds_since(start);

    // The reply, one token at a time against the whole history (or what the budget kept).
    start = Clock::now();
    for (alibi::index_t t = 0; t < r; ++t) {
      auto qt = activations(rng, 1, q_heads, dim);
      const auto kt = activations(rng, 1, kv_heads, dim), vt = activations(rng, 1, kv_heads, dim);
      std::vector<float> step(qt.size());
      append(kt, vt, 1);
      alibi::attention(alibi::make_view(qt.data(), 1, 1, q_heads, dim), cache, {chat},
                       alibi::make_view(step.data(), 1, 1, q_heads, dim), params);
      certify(&decode_bound);
      last_bound = stats.evicted_weight_bound;
      checksum += step[0];
      last_q = std::move(qt);
      last_out = std::move(step);
    }
    const double decode = double(r) / seconds_since(start);
    std::printf("%5d %9lld %14.0f %14.1f %10.1f %14.3g %14.3g\n", turn,
                static_cast<long long>(cache.length(chat)), prefill, decode,
                double(cache.bytes_used()) / (1 << 20), prefill_bound, decode_bound);
  }
  std::printf("checksum %.6f, %.0f tokens/s over the session, peak cache %.1f MiB\n", checksum,
              double(tokens) / seconds_since(session_start), double(peak) / (1 << 20));
  if (!o.check) return std::isfinite(checksum) ? 0 : 1;

  bool ok = true;
  const auto expect = [&](bool pass, const std::string& what) {
    std::printf("check: %-72s %s\n", what.c_str(), pass ? "yes" : "NO");
    ok = ok && pass;
  };
  char line[160];
  if (options.max_bytes > 0) {
    std::snprintf(line, sizeof line, "cache within its budget after every append (peak %zu of %zu)",
                  peak, options.max_bytes);
    expect(within_budget, line);
  }
  expect(finite_bounds && std::isfinite(checksum), "every certificate and output finite");
  if (!compare) {
    std::printf("check: no dense comparison above %lld tokens (the history copy would not fit)\n",
                check_history_limit);
    return ok ? 0 : 1;
  }
  if (last_q.empty()) {
    expect(false, "a decode step to compare (--tokens too small)");
    return 1;
  }
  // Dense float64 attention of the last query over the whole history, bottom-right aligned.
  const alibi::index_t n = alibi::index_t(v_all.size() / (kv_heads * dim));
  std::vector<float> dense(last_out.size());
  alibi::reference::attention(alibi::make_view<const float>(last_q.data(), 1, 1, q_heads, dim),
                              alibi::make_view<const float>(k_all.data(), 1, n, kv_heads, dim),
                              alibi::make_view<const float>(v_all.data(), 1, n, kv_heads, dim),
                              alibi::make_view(dense.data(), 1, 1, q_heads, dim));
  double max_v = 0, error = 0;
  for (const float x : v_all) max_v = std::max(max_v, double(std::fabs(x)));
  for (std::size_t i = 0; i < dense.size(); ++i)
    error = std::max(error, std::fabs(double(last_out[i]) - double(dense[i])));
  // The kernel's own float rounding against a float64 oracle: the quickstart's 1e-4 is for
  // outputs of unit scale; these are at most max|v|.
  const double round_off = 1e-5 * max_v, limit = 2 * last_bound * max_v + round_off;
  if (options.max_bytes > 0)
    expect(cache.evicted_end(chat, 0) > 0,
           "the budget evicted keys (the comparison is not vacuous)");
  std::snprintf(line, sizeof line, "|out - dense| %.3g <= 2 x bound %.3g x max|v| %.3g + %.1g",
                error, last_bound, max_v, round_off);
  expect(error <= limit, line);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear as they come, also through a pipe
  const Options o = parse(argc, argv);
  try {
    return run(o);
  } catch (const std::invalid_argument& e) {  // a budget below one page per kv head
    std::fprintf(stderr, "alibi_streaming_chat: %s\n", e.what());
    return 2;
  }
}
