#pragma once
// The experiment of train_short_test_long.cpp, shared with alibi_bench's extrapolation case:
// train the same model with each position scheme at length L, evaluate at L, 2L, 4L, 8L, 16L.
// Example code, not part of the library.

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

constexpr Positions schemes[] = {Positions::alibi, Positions::sinusoidal, Positions::none,
                                 Positions::alibi_learned};

/// Mean loss over `tokens` held-out symbols cut into windows of `length`, every position scored.
inline double evaluate(Model<float>& model, const Language& language, long length, long tokens,
                       unsigned seed) {
  std::mt19937 rng(seed);
  const long windows = std::max(1L, tokens / length), batch = std::max(1L, 4096 / length);
  double total = 0;
  long scored = 0;
  for (long w = 0; w < windows; w += batch) {
    const long n = std::min(batch, windows - w);
    std::vector<int> inputs, targets;
    for (long s = 0; s < n; ++s) {
      const std::vector<int> run = language.sample(std::size_t(length + 1), rng, true);
      inputs.insert(inputs.end(), run.begin(), run.end() - 1);
      targets.insert(targets.end(), run.begin() + 1, run.end());
    }
    total += model.step(inputs, targets, n, length, false) * double(n * length);
    scored += n * length;
  }
  return total / double(scored);
}

/// Per scheme name, the mean held-out loss at L, 2L, 4L, 8L and 16L after `steps` AdamW steps of
/// 16 sequences of L tokens. Deterministic for a seed. With `progress`, a progress bar with ETA
/// on stderr.
inline std::map<std::string, std::vector<double>> extrapolation(const Language& language, long L,
                                                                long steps, long eval_tokens,
                                                                unsigned seed, bool progress) {
  const long batch = 16, multiples[] = {1, 2, 4, 8, 16};
  std::map<std::string, std::vector<double>> losses;
  for (const Positions scheme : schemes) {
    Config config;
    config.vocab = language.vocab();
    config.positions = scheme;
    Model<float> model(config, seed);
    std::mt19937 data(seed * 7919 + 1);
    const auto start = std::chrono::steady_clock::now();
    double smoothed = 0;
    for (long step = 1; step <= steps; ++step) {
      std::vector<int> inputs, targets;
      for (long s = 0; s < batch; ++s) {
        const std::vector<int> run = language.sample(std::size_t(L + 1), data, false);
        inputs.insert(inputs.end(), run.begin(), run.end() - 1);
        targets.insert(targets.end(), run.begin() + 1, run.end());
      }
      model.zero_grad();
      const double loss = model.step(inputs, targets, batch, L, true);
      // Linear warmup, then cosine decay to a tenth.
      const double warm = std::min(1.0, double(step) / 100.0);
      const double decay =
          0.1 + 0.9 * 0.5 * (1 + std::cos(3.141592653589793 * double(step) / double(steps)));
      model.adamw(3e-3 * warm * decay, 0.01, 1.0, int(step));
      smoothed = step == 1 ? loss : 0.95 * smoothed + 0.05 * loss;
      if (progress && (step % 10 == 0 || step == steps)) {
        const double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::fprintf(stderr, "\r%-14s step %5ld/%ld  loss %.4f  %5.1fs, ETA %5.1fs ", name(scheme),
                     step, steps, smoothed, elapsed, elapsed / double(step) * double(steps - step));
      }
    }
    if (progress) std::fprintf(stderr, "\n");
    for (const long m : multiples)
      losses[name(scheme)].push_back(evaluate(model, language, m * L, eval_tokens, seed + 99));
    if (progress && scheme == Positions::alibi_learned) {
      std::printf("learned slopes:");
      for (Eigen::Index h = 0; h < model.slopes().cols(); ++h)
        std::printf(" %.4f", double(model.slopes()(0, h)));
      std::printf("\n");
    }
  }
  return losses;
}

}  // namespace train
