#pragma once
// The experiment of train_short_test_long.cpp, shared with alibi_bench's extrapolation case:
// train the same model with each position scheme at length L, evaluate at L, 2L, 4L, ... 32L.
// Example code, not part of the library.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "language.hpp"
#include "model.hpp"

namespace train {

constexpr Positions schemes[] = {Positions::alibi, Positions::alibi_learned, Positions::rotary,
                                 Positions::sinusoidal, Positions::none};

struct Setup {
  long train_len = 64, steps = 1200, batch = 16;
  long eval_tokens = 1L << 17;  // held-out symbols scored at every evaluation length
  unsigned seed = 1;
  bool progress = false;  // progress lines on stderr
};

struct Results {
  std::vector<long> eval_lengths;                     // L, 2L, ... as far as the held-out text goes
  long eval_chunks = 0;                               // held-out runs of the longest length
  std::map<std::string, std::vector<double>> losses;  // per scheme, mean loss per eval length
  std::map<std::string, double> tokens_per_second;    // per scheme: forward + backward, 1 thread
  std::vector<float> learned_slopes;                  // alibi_learned's, per head
  int threads = 1;                                    // schemes trained at once, a thread each
  double seconds = 0;                                 // the whole run
};

/// Progress lines on stderr, about every 2 s, from whichever scheme's thread passes by, with an
/// ETA of the whole run: the remaining steps and evaluations at the pace of those done (an
/// evaluation counts as the training steps it took as long as, known after the first).
class Progress {
 public:
  Progress(long total_steps, int evaluations, bool on)
      : total_steps_(total_steps), evaluations_(evaluations), on_(on) {}

  void step(const char* scheme, long step, long steps, double loss, double tokens_per_second) {
    const std::lock_guard<std::mutex> lock(mutex_);
    ++steps_done_;
    const double elapsed = seconds_since(start_);
    if (!on_ || (elapsed - last_line_ < 2.0 && step != steps)) return;
    last_line_ = elapsed;
    const double per_eval = evaluated_ > 0 ? eval_units_ / evaluated_ : 0;
    const double done = double(steps_done_) + eval_units_,
                 left = double(total_steps_ - steps_done_) + per_eval * (evaluations_ - evaluated_);
    std::fprintf(stderr,
                 "%-13s step %5ld/%ld  loss %.4f  %6.0f tokens/s  elapsed %4.0fs  ETA %4.0fs\n",
                 scheme, step, steps, loss, tokens_per_second, elapsed, elapsed * left / done);
  }
  /// A line per evaluation length, so that lines keep coming while no scheme trains.
  void scored(const char* scheme, long length, double loss, double seconds) {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (on_)
      std::fprintf(stderr, "%-13s held-out perplexity at %5ld tokens: %8.3f  (%.1fs)\n", scheme,
                   length, std::exp(loss), seconds);
  }
  /// An evaluation took `seconds` where a training step took `step_seconds`.
  void evaluated(double seconds, double step_seconds) {
    const std::lock_guard<std::mutex> lock(mutex_);
    eval_units_ += seconds / step_seconds;
    ++evaluated_;
  }

  static double seconds_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }

 private:
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  const long total_steps_;
  const int evaluations_;
  const bool on_;
  std::mutex mutex_;
  long steps_done_ = 0;
  int evaluated_ = 0;
  double eval_units_ = 0, last_line_ = -1e9;
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
/// longest that the held-out text holds, at least 16L). The schemes train at once, one thread
/// each (OpenMP; attention and Eigen then run serially inside): at this model's size that uses
/// the cores, where splitting each step's small products over threads did not (and stalled on a
/// busy machine). Deterministic for a seed, whatever the thread count.
inline Results extrapolation(const Language& language, const Setup& setup) {
  const auto start = std::chrono::steady_clock::now();
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

  constexpr int count = int(std::size(schemes));
  std::vector<std::vector<double>> losses(count);
  std::vector<double> tokens_per_second(count);
  Progress progress(setup.steps * count, count, setup.progress);
#ifdef _OPENMP
  results.threads = std::min(count, omp_get_max_threads());
#pragma omp parallel for schedule(dynamic, 1) num_threads(results.threads)
#endif
  for (int index = 0; index < count; ++index) {
    const Positions scheme = schemes[index];
    Config config;
    config.vocab = language.vocab();
    config.positions = scheme;
    Model<float> model(config, setup.seed);
    std::mt19937 data(setup.seed * 7919 + 1);
    double smoothed = 0, compute = 0;
    const auto scheme_start = std::chrono::steady_clock::now();
    for (long step = 1; step <= setup.steps; ++step) {
      std::vector<int> inputs, targets;
      for (long s = 0; s < setup.batch; ++s) {
        const std::vector<int> run = language.sample(std::size_t(L + 1), data);
        inputs.insert(inputs.end(), run.begin(), run.end() - 1);
        targets.insert(targets.end(), run.begin() + 1, run.end());
      }
      model.zero_grad();
      const auto before = std::chrono::steady_clock::now();
      const double loss = model.step(inputs, targets, setup.batch, L, true);
      compute += Progress::seconds_since(before);
      // Linear warmup, then cosine decay to a tenth.
      const double warm = std::min(1.0, double(step) / 100.0);
      const double decay =
          0.1 + 0.9 * 0.5 * (1 + std::cos(3.141592653589793 * double(step) / double(setup.steps)));
      model.adamw(3e-3 * warm * decay, 0.01, 1.0, int(step));
      smoothed = step == 1 ? loss : 0.95 * smoothed + 0.05 * loss;
      progress.step(name(scheme), step, setup.steps, smoothed,
                    double(step * setup.batch * L) / compute);
    }
    tokens_per_second[std::size_t(index)] = double(setup.steps * setup.batch * L) / compute;
    const double step_seconds = Progress::seconds_since(scheme_start) / double(setup.steps);
    const auto eval_start = std::chrono::steady_clock::now();
    for (const long length : results.eval_lengths) {
      const auto length_start = std::chrono::steady_clock::now();
      losses[std::size_t(index)].push_back(evaluate(model, chunks, length));
      progress.scored(name(scheme), length, losses[std::size_t(index)].back(),
                      Progress::seconds_since(length_start));
    }
    progress.evaluated(Progress::seconds_since(eval_start), step_seconds);
    if (scheme == Positions::alibi_learned)
      for (Eigen::Index h = 0; h < model.slopes().cols(); ++h)
        results.learned_slopes.push_back(float(model.slopes()(0, h)));
  }
  for (int index = 0; index < count; ++index) {
    results.losses[name(schemes[index])] = losses[std::size_t(index)];
    results.tokens_per_second[name(schemes[index])] = tokens_per_second[std::size_t(index)];
  }
  results.seconds = Progress::seconds_since(start);
  return results;
}

}  // namespace train
