// Many chat sessions served together from one paged KV cache: a system prompt is prefilled
// once and forked into every session (its pages stored once), each session prefills its own user
// message, then all sessions decode together, one attention call per step over the whole batch
// (continuous batching). Run once per storage format; prints the memory each format holds, what
// the same sessions would hold without sharing, the decode rate, and how far each format's last
// outputs are from the f32 cache's (random activations stand in for a model; the same seeds for
// every format). Run with --help for the flags.
#include <alibi/alibi.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

using alibi::index_t;
using Clock = std::chrono::steady_clock;

const char* const usage = R"(usage: serve_batch [flags]
Serves --sessions chat sessions from one alibi::PagedKVCache per storage format: a shared system
prompt (prefilled once, forked into each session), a user message per session, then --steps
decode steps with every session in one attention call.
  --sessions N      sessions decoding together (default 16)
  --prompt N        system prompt tokens, shared by all sessions (default 4096)
  --message N       user message tokens per session (default 64)
  --steps N         tokens decoded per session (default 64)
  --format F        f32, f16, bf16, int8 or all (default all)
  --threads N       attention threads, 0 for all (default 0)
  --quick           4 sessions, a 512-token prompt, 8 steps (what ctest runs)
  --help            this text
)";

struct Flags {
  index_t sessions = 16, prompt = 4096, message = 64, steps = 64;
  std::string format = "all";
  int threads = 0;
};

Flags parse(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "serve_batch: %s needs a value\n%s", a.c_str(), usage);
        std::exit(2);
      }
      return argv[++i];
    };
    const auto count = [&](index_t minimum) {
      const std::string v = value();
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < minimum || n > (1 << 24)) {
        std::fprintf(stderr, "serve_batch: %s wants a whole number >= %lld, got '%s'\n", a.c_str(),
                     static_cast<long long>(minimum), v.c_str());
        std::exit(2);
      }
      return index_t(n);
    };
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    } else if (a == "--sessions") {
      f.sessions = count(1);
    } else if (a == "--prompt") {
      f.prompt = count(1);
    } else if (a == "--message") {
      f.message = count(1);
    } else if (a == "--steps") {
      f.steps = count(1);
    } else if (a == "--threads") {
      f.threads = int(count(0));
    } else if (a == "--format") {
      f.format = value();
      if (f.format != "all" && f.format != "f32" && f.format != "f16" && f.format != "bf16" &&
          f.format != "int8") {
        std::fprintf(stderr, "serve_batch: unknown --format '%s'\n%s", f.format.c_str(), usage);
        std::exit(2);
      }
    } else if (a == "--quick") {
      f.sessions = 4, f.prompt = 512, f.message = 32, f.steps = 8;
    } else {
      std::fprintf(stderr, "serve_batch: unknown flag '%s'\n%s", a.c_str(), usage);
      std::exit(2);
    }
  }
  return f;
}

/// Random activations for `rows` x n tokens of `heads` heads of `dim`, from `seed`.
std::vector<float> activations(std::uint32_t seed, index_t rows, index_t n, index_t heads,
                               index_t dim) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(std::size_t(rows * n * heads * dim));
  for (float& e : x) e = normal(rng);
  return x;
}

struct Run {
  std::size_t bytes_used = 0, unshared_bytes = 0;
  double prefill_seconds = 0, decode_seconds = 0;
  std::vector<float> last;  // the last step's outputs, [sessions, 1, Hq, D]
};

Run serve(const Flags& f, alibi::KVFormat format) {
  constexpr index_t q_heads = 32, kv_heads = 8, dim = 128;
  const index_t S = f.sessions;
  alibi::Params params;  // causal, slopes(32), the default tail skip
  params.num_threads = f.threads;
  alibi::PagedKVCache cache({kv_heads, dim, 0, 64, format});
  Run run;
  const auto start = Clock::now();
  // The system prompt, prefilled once.
  const alibi::SequenceId system = cache.add_sequence();
  {
    const auto q = activations(1, 1, f.prompt, q_heads, dim);
    const auto k = activations(2, 1, f.prompt, kv_heads, dim);
    const auto v = activations(3, 1, f.prompt, kv_heads, dim);
    std::vector<float> out(q.size());
    cache.append(system, alibi::make_view(k.data(), 1, f.prompt, kv_heads, dim),
                 alibi::make_view(v.data(), 1, f.prompt, kv_heads, dim));
    alibi::attention(alibi::make_view(q.data(), 1, f.prompt, q_heads, dim), cache, {system},
                     alibi::make_view(out.data(), 1, f.prompt, q_heads, dim), params);
  }
  // Every session starts from the prompt's pages; its user message is prefilled with the others'
  // in one call (row b: session b's message).
  std::vector<alibi::SequenceId> sessions;
  for (index_t s = 0; s < S; ++s) sessions.push_back(cache.fork(system));
  cache.release(system);  // the sessions keep its pages
  {
    const auto q = activations(4, S, f.message, q_heads, dim);
    const auto k = activations(5, S, f.message, kv_heads, dim);
    const auto v = activations(6, S, f.message, kv_heads, dim);
    const index_t row = f.message * kv_heads * dim;
    for (index_t s = 0; s < S; ++s)
      cache.append(sessions[std::size_t(s)],
                   alibi::make_view(k.data() + s * row, 1, f.message, kv_heads, dim),
                   alibi::make_view(v.data() + s * row, 1, f.message, kv_heads, dim));
    std::vector<float> out(q.size());
    alibi::attention(alibi::make_view(q.data(), S, f.message, q_heads, dim), cache, sessions,
                     alibi::make_view(out.data(), S, f.message, q_heads, dim), params);
  }
  run.prefill_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // Decode: each step appends one token per session and attends all sessions in one call.
  std::vector<float> out(std::size_t(S * q_heads * dim));
  const auto decode_start = Clock::now();
  for (index_t t = 0; t < f.steps; ++t) {
    const auto q = activations(std::uint32_t(100 + 3 * t), S, 1, q_heads, dim);
    const auto k = activations(std::uint32_t(101 + 3 * t), S, 1, kv_heads, dim);
    const auto v = activations(std::uint32_t(102 + 3 * t), S, 1, kv_heads, dim);
    for (index_t s = 0; s < S; ++s)
      cache.append(sessions[std::size_t(s)],
                   alibi::make_view(k.data() + s * kv_heads * dim, 1, 1, kv_heads, dim),
                   alibi::make_view(v.data() + s * kv_heads * dim, 1, 1, kv_heads, dim));
    alibi::attention(alibi::make_view(q.data(), S, 1, q_heads, dim), cache, sessions,
                     alibi::make_view(out.data(), S, 1, q_heads, dim), params);
  }
  run.decode_seconds = std::chrono::duration<double>(Clock::now() - decode_start).count();
  run.last = out;
  run.bytes_used = cache.bytes_used();
  // Without sharing every session would hold its own pages of the prompt.
  const index_t tokens = f.prompt + f.message + f.steps;
  run.unshared_bytes =
      std::size_t(S * kv_heads * ((tokens + cache.page_size() - 1) / cache.page_size())) *
      cache.page_bytes();
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear as they come, also through a pipe
  const Flags f = parse(argc, argv);
  std::printf(
      "%lld sessions, a %lld-token shared system prompt, %lld-token messages, %lld decode "
      "steps; Hq 32, Hkv 8, D 128\n",
      static_cast<long long>(f.sessions), static_cast<long long>(f.prompt),
      static_cast<long long>(f.message), static_cast<long long>(f.steps));
  std::printf("%6s %12s %14s %12s %14s %14s\n", "format", "cache MiB", "unshared MiB", "prefill s",
              "decode tok/s", "max |out-f32|");
  const std::pair<const char*, alibi::KVFormat> formats[] = {{"f32", alibi::KVFormat::f32},
                                                             {"f16", alibi::KVFormat::f16},
                                                             {"bf16", alibi::KVFormat::bf16},
                                                             {"int8", alibi::KVFormat::int8}};
  std::vector<float> reference;
  bool finite = true;
  for (const auto& [name, format] : formats) {
    if (f.format != "all" && f.format != name) continue;
    const Run run = serve(f, format);
    if (format == alibi::KVFormat::f32) reference = run.last;
    double diff = 0;
    for (std::size_t i = 0; i < run.last.size(); ++i) {
      finite = finite && std::isfinite(run.last[i]);
      if (!reference.empty()) diff = std::max(diff, double(std::fabs(run.last[i] - reference[i])));
    }
    char diff_text[32] = "-";
    if (!reference.empty()) std::snprintf(diff_text, sizeof diff_text, "%.2e", diff);
    std::printf("%6s %12.1f %14.1f %12.2f %14.0f %14s\n", name, double(run.bytes_used) / (1 << 20),
                double(run.unshared_bytes) / (1 << 20), run.prefill_seconds,
                double(f.sessions * f.steps) / run.decode_seconds, diff_text);
  }
  return finite ? 0 : 1;
}
