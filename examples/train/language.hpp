#pragma once
// The training data of train_short_test_long.cpp: a synthetic language with local structure and
// a known entropy rate, or any byte corpus. Example code, not part of the library.
//
// The synthetic language is an order-2 Markov chain over `vocab` symbols: after the pair (a, b)
// come four possible symbols, chosen per pair at random, with probabilities 0.6, 0.25, 0.1 and
// 0.05. Predicting the next symbol needs the last two: the previous symbol is in each position's
// own input, the one before it only through attention to the nearest keys. Its entropy rate,
// the floor of any model's loss, follows from the chain's stationary distribution.

#include <cmath>
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
  /// A byte corpus: the text itself, cut into training and held-out parts by the caller.
  explicit Language(const std::string& path) : vocab_(256) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() < 100000) throw std::runtime_error(path + ": need at least 100000 bytes");
    for (unsigned char ch : text) corpus_.push_back(int(ch));
  }

  int vocab() const { return vocab_; }
  bool synthetic() const { return corpus_.empty(); }
  /// Nats per symbol of the synthetic language (NaN for a corpus).
  double entropy_rate() const { return entropy_rate_; }

  /// n consecutive symbols: a fresh run of the chain from `rng`, or the corpus from `offset`
  /// (training uses the first 90% of the corpus, evaluation the rest).
  std::vector<int> sample(std::size_t n, std::mt19937& rng, bool held_out) const {
    std::vector<int> out(n);
    if (!synthetic()) {
      const std::size_t split = corpus_.size() * 9 / 10;
      const std::size_t begin = held_out ? split : 0, end = held_out ? corpus_.size() : split;
      const std::size_t start = begin + rng() % (end - begin - n);
      for (std::size_t i = 0; i < n; ++i) out[i] = corpus_[start + i];
      return out;
    }
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

 private:
  static constexpr double weights[4] = {0.6, 0.25, 0.1, 0.05};

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
  std::vector<int> successors_, corpus_;
  double entropy_rate_ = std::nan("");
};

}  // namespace train
