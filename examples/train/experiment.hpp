#pragma once
// The experiment of train_short_test_long.cpp, shared with alibi_bench's extrapolation case:
// train the same model with each position scheme at length L, evaluate at L, 2L, 4L, ... 32L.
// Example code, not part of the library.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "language.hpp"
#include "model.hpp"

namespace train {

constexpr Positions schemes[] = {Positions::alibi, Positions::alibi_learned, Positions::rotary,
                                 Positions::sinusoidal, Positions::none};

struct Setup {
  long train_len = 64, steps = 1200, batch = 16;
  long eval_tokens = 1L << 17;  // held-out symbols scored at every evaluation length
  unsigned seed = 1;
  bool progress = false;  // progress lines on stderr, learned slopes on stdout
};

struct Results {
  std::vector<long> eval_lengths;                     // L, 2L, ... as far as the held-out text goes
  long eval_chunks = 0;                               // held-out runs of the longest length
  std::map<std::string, std::vector<double>> losses;  // per scheme, mean loss per eval length
  std::map<std::string, double> tokens_per_second;    // per scheme, training forward + backward
  double seconds = 0;                                 // the whole run
};

/// Mean loss over the held-out chunks, each cut into windows of `length` (a divisor of the chunk's
/// length less one), every position of every window scored: the same targets at every length.
inline double evaluate(Model<float>& model, const std::vector<std::vector<int>>& chunks,
                       long length) {
  const long batch = std::max(1L, 8192 / length);
  std::vector<int> inputs, targets;
  double total = 0;
  long scored = 0, rows = 0;
  const auto flush = [&] {
    if (rows == 0) return;
    total += model.step(inputs, targets, rows, length, false) * double(rows * length);
    scored += rows * length;
    inputs.clear();
    targets.clear();
    rows = 0;
  };
  for (const std::vector<int>& chunk : chunks)
    for (std::size_t start = 0; start + std::size_t(length) < chunk.size(); start += length) {
      const auto first = chunk.begin() + std::ptrdiff_t(start);
      inputs.insert(inputs.end(), first, first + length);
      targets.insert(targets.end(), first + 1, first + length + 1);
      if (++rows == batch) flush();
    }
  flush();
  return total / double(scored);
}

/// Trains one model per scheme for `steps` AdamW steps of `batch` sequences of L training
/// symbols, then evaluates each on the same held-out text at L, 2L, 4L, 8L, 16L and 32L (the
/// longest that the held-out text holds, at least 16L). Deterministic for a seed.
inline Results extrapolation(const Language& language, const Setup& setup) {
  using clock = std::chrono::steady_clock;
  const auto seconds_since = [](clock::time_point t) {
    return std::chrono::duration<double>(clock::now() - t).count();
  };
  const long L = setup.train_len;
  Results results;
  for (long m = 1; m <= 32 && std::size_t(m * L) < language.held_out_size(); m *= 2)
    results.eval_lengths.push_back(m * L);
  if (results.eval_lengths.size() < 5)
    throw std::runtime_error("the held-out text has " + std::to_string(language.held_out_size()) +
                             " symbols, fewer than 16 L + 1 = " + std::to_string(16 * L + 1));
  const long longest = results.eval_lengths.back();
  const long fit = long(std::min<std::size_t>(language.held_out_size() / std::size_t(longest + 1),
                                              std::size_t(1) << 20));
  results.eval_chunks = std::max(1L, std::min(setup.eval_tokens / longest, fit));
  const auto chunks = language.held_out(std::size_t(results.eval_chunks), std::size_t(longest + 1),
                                        setup.seed + 99);

  const auto start = clock::now();
  const long total_steps = setup.steps * long(std::size(schemes));
  long steps_done = 0;
  double train_seconds = 0, eval_seconds = 0;
  int evaluated = 0;
  for (const Positions scheme : schemes) {
    Config config;
    config.vocab = language.vocab();
    config.positions = scheme;
    Model<float> model(config, setup.seed);
    std::mt19937 data(setup.seed * 7919 + 1);
    double smoothed = 0, compute = 0, last_print = -1e9;
    const auto scheme_start = clock::now();
    for (long step = 1; step <= setup.steps; ++step) {
      std::vector<int> inputs, targets;
      for (long s = 0; s < setup.batch; ++s) {
        const std::vector<int> run = language.sample(std::size_t(L + 1), data);
        inputs.insert(inputs.end(), run.begin(), run.end() - 1);
        targets.insert(targets.end(), run.begin() + 1, run.end());
      }
      model.zero_grad();
      const auto before = clock::now();
      const double loss = model.step(inputs, targets, setup.batch, L, true);
      compute += seconds_since(before);
      // Linear warmup, then cosine decay to a tenth.
      const double warm = std::min(1.0, double(step) / 100.0);
      const double decay =
          0.1 + 0.9 * 0.5 * (1 + std::cos(3.141592653589793 * double(step) / double(setup.steps)));
      model.adamw(3e-3 * warm * decay, 0.01, 1.0, int(step));
      smoothed = step == 1 ? loss : 0.95 * smoothed + 0.05 * loss;
      ++steps_done;
      const double elapsed = seconds_since(start);
      if (setup.progress && (elapsed - last_print >= 2.0 || step == setup.steps)) {
        last_print = elapsed;
        // ETA of the whole run: the remaining steps at this run's pace, plus an evaluation per
        // scheme not yet evaluated at the pace of those done (none counted before the first).
        const double step_seconds = (train_seconds + seconds_since(scheme_start)) / steps_done;
        const double eta = step_seconds * double(total_steps - steps_done) +
                           (evaluated > 0 ? eval_seconds / evaluated : 0) *
                               double(long(std::size(schemes)) - evaluated);
        std::fprintf(stderr,
                     "%-13s step %5ld/%ld  loss %.4f  %6.0f tokens/s  elapsed %4.0fs  ETA %4.0fs\n",
                     name(scheme), step, setup.steps, smoothed,
                     double(step * setup.batch * L) / compute, elapsed, eta);
      }
    }
    train_seconds += seconds_since(scheme_start);
    results.tokens_per_second[name(scheme)] = double(setup.steps * setup.batch * L) / compute;
    const auto eval_start = clock::now();
    for (const long length : results.eval_lengths)
      results.losses[name(scheme)].push_back(evaluate(model, chunks, length));
    eval_seconds += seconds_since(eval_start);
    ++evaluated;
    if (setup.progress && scheme == Positions::alibi_learned) {
      std::printf("learned slopes:");
      for (Eigen::Index h = 0; h < model.slopes().cols(); ++h)
        std::printf(" %.4f", double(model.slopes()(0, h)));
      std::printf("\n");
    }
  }
  results.seconds = seconds_since(start);
  return results;
}

}  // namespace train
