#pragma once
// The training data of train_short_test_long.cpp: a synthetic language with local structure and
// a known entropy rate, or any byte corpus with its held-out text. Example code, not part of the
// library.
//
// The synthetic language is an order-2 Markov chain over `vocab` symbols: after the pair (a, b)
// come four possible symbols, chosen per pair at random, with probabilities 0.6, 0.25, 0.1 and
// 0.05. Predicting the next symbol needs the last two: the previous symbol is in each position's
// own input, the one before it only through attention to the nearest keys. Its entropy rate,
// the floor of any model's loss, follows from the chain's stationary distribution.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace train {

class Language {
 public:
  /// The synthetic language, its table drawn from `seed`.
  Language(int vocab, unsigned seed) : vocab_(vocab) {
    std::mt19937 rng(seed);
    successors_.resize(std::size_t(vocab * vocab * 4));
    for (int& s : successors_) s = int(rng() % unsigned(vocab));
    stationary_entropy_rate();
  }
  /// A byte corpus: training text from `path`, held-out text from `held_out_path`, or when that
  /// is empty the last tenth of `path` (the first nine tenths then being the training text).
  Language(const std::string& path, const std::string& held_out_path) : vocab_(256) {
    corpus_ = read(path);
    if (held_out_path.empty()) {
      const std::size_t split = corpus_.size() * 9 / 10;
      held_out_.assign(corpus_.begin() + std::ptrdiff_t(split), corpus_.end());
      corpus_.resize(split);
    } else {
      held_out_ = read(held_out_path);
    }
    if (corpus_.size() < 100000 || held_out_.size() < 10000)
      throw std::runtime_error(
          "need at least 100000 bytes of training text and 10000 of "
          "held-out text, have " +
          std::to_string(corpus_.size()) + " (" + path + ") and " +
          std::to_string(held_out_.size()) + " (" +
          (held_out_path.empty() ? "its last tenth" : held_out_path) + ")");
  }

  int vocab() const { return vocab_; }
  bool synthetic() const { return corpus_.empty(); }
  /// Nats per symbol of the synthetic language (NaN for a corpus).
  double entropy_rate() const { return entropy_rate_; }
  /// Symbols of held-out text there are (unbounded for the synthetic language).
  std::size_t held_out_size() const { return synthetic() ? SIZE_MAX : held_out_.size(); }

  /// n consecutive training symbols: a fresh run of the chain, or the training text from a
  /// random offset.
  std::vector<int> sample(std::size_t n, std::mt19937& rng) const {
    if (!synthetic()) {
      const std::size_t start = rng() % (corpus_.size() - n);
      return std::vector<int>(corpus_.begin() + std::ptrdiff_t(start),
                              corpus_.begin() + std::ptrdiff_t(start + n));
    }
    return run(n, rng);
  }

  /// `chunks` runs of n held-out symbols, the same for every call with these arguments: chunks
  /// spread evenly over the held-out text, or fresh runs of the chain drawn from `seed`.
  std::vector<std::vector<int>> held_out(std::size_t chunks, std::size_t n, unsigned seed) const {
    std::vector<std::vector<int>> out;
    std::mt19937 rng(seed);
    for (std::size_t c = 0; c < chunks; ++c) {
      if (synthetic()) {
        out.push_back(run(n, rng));
        continue;
      }
      const std::size_t start = (held_out_.size() - n) * c / std::max<std::size_t>(1, chunks - 1);
      out.emplace_back(held_out_.begin() + std::ptrdiff_t(start),
                       held_out_.begin() + std::ptrdiff_t(start + n));
    }
    return out;
  }

 private:
  static constexpr double weights[4] = {0.6, 0.25, 0.1, 0.05};

  static std::vector<int> read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<int> bytes;
    bytes.reserve(text.size());
    for (const unsigned char ch : text) bytes.push_back(int(ch));  // char may be signed
    return bytes;
  }

  std::vector<int> run(std::size_t n, std::mt19937& rng) const {
    std::vector<int> out(n);
    int a = int(rng() % unsigned(vocab_)), b = int(rng() % unsigned(vocab_));
    std::uniform_real_distribution<double> uniform;
    for (std::size_t i = 0; i < n; ++i) {
      const double u = uniform(rng);
      const int choice = u < 0.6 ? 0 : u < 0.85 ? 1 : u < 0.95 ? 2 : 3;
      const int next = successors_[std::size_t((a * vocab_ + b) * 4 + choice)];
      out[i] = next;
      a = b;
      b = next;
    }
    return out;
  }

  /// Power iteration over the pairs, then the entropy of each pair's next symbol (successors
  /// that coincide merge their probability) weighted by the pair's stationary probability.
  void stationary_entropy_rate() {
    const std::size_t pairs = std::size_t(vocab_ * vocab_);
    std::vector<double> pi(pairs, 1.0 / double(pairs)), next(pairs);
    for (int iteration = 0; iteration < 2000; ++iteration) {
      std::fill(next.begin(), next.end(), 0.0);
      for (std::size_t ab = 0; ab < pairs; ++ab)
        for (int c = 0; c < 4; ++c)
          next[(ab % std::size_t(vocab_)) * std::size_t(vocab_) +
               std::size_t(successors_[ab * 4 + std::size_t(c)])] += pi[ab] * weights[c];
      pi.swap(next);
    }
    entropy_rate_ = 0;
    for (std::size_t ab = 0; ab < pairs; ++ab) {
      std::vector<double> p(std::size_t(vocab_), 0.0);
      for (int c = 0; c < 4; ++c)
        p[std::size_t(successors_[ab * 4 + std::size_t(c)])] += weights[c];
      for (double x : p)
        if (x > 0) entropy_rate_ -= pi[ab] * x * std::log(x);
    }
  }

  int vocab_;
  std::vector<int> successors_, corpus_, held_out_;
  double entropy_rate_ = std::nan("");
};

}  // namespace train
