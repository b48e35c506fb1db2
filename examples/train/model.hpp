#pragma once
// A small decoder-only transformer for train_short_test_long.cpp: token embedding (tied with the
// output layer), pre-LayerNorm blocks of causal attention (alibi::attention and
// alibi::attention_backward on packed QKV) and a GELU MLP, a final LayerNorm, cross-entropy, and
// AdamW with gradient clipping. The position scheme is the only thing that changes between
// runs. Example code, not part of the library.

#include <alibi/alibi.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "layers.hpp"

namespace train {

enum class Positions { alibi, alibi_learned, rotary, sinusoidal, none };

inline const char* name(Positions p) {
  switch (p) {
    case Positions::alibi:
      return "alibi";
    case Positions::alibi_learned:
      return "alibi_learned";
    case Positions::rotary:
      return "rotary";
    case Positions::sinusoidal:
      return "sinusoidal";
    default:
      return "nope";
  }
}

struct Config {
  int vocab = 32, dim = 64, heads = 4, layers = 2;
  Positions positions = Positions::alibi;
  double rotary_base = 10000;  // RoFormer's and Llama's
};

/// A parameter tensor with its gradient and AdamW moments.
template <class S>
struct Parameter {
  Matrix<S> value, grad;
  std::vector<double> moments;  // AdamW's first and second moments, interleaved, in double
  bool decay = false;           // weight decay applies to weight matrices only

  Parameter(Eigen::Index rows, Eigen::Index cols, bool decay_)
      : value(Matrix<S>::Zero(rows, cols)),
        grad(Matrix<S>::Zero(rows, cols)),
        moments(std::size_t(2 * rows * cols), 0.0),
        decay(decay_) {}
};

template <class S>
class Model {
  using Index = Eigen::Index;

 public:
  Model(const Config& config, unsigned seed)
      : c_(config),
        embedding_(config.vocab, config.dim, true),
        final_gain_(1, config.dim, false),
        final_bias_(1, config.dim, false),
        slopes_(1, config.heads, false) {
    std::mt19937 rng(seed);
    const auto init = [&](Parameter<S>& p, double std) {
      std::normal_distribution<double> normal(0.0, std);
      for (Index i = 0; i < p.value.size(); ++i) p.value.data()[i] = S(normal(rng));
    };
    const int d = c_.dim;
    init(embedding_, 0.1);
    final_gain_.value.setOnes();
    for (int l = 0; l < c_.layers; ++l) {
      Block& b = blocks_.emplace_back(d);
      init(b.qkv, 1.0 / std::sqrt(d));
      init(b.out, 0.5 / std::sqrt(d * c_.layers));
      init(b.up, 1.0 / std::sqrt(d));
      init(b.down, 0.5 / std::sqrt(4.0 * d * c_.layers));
      b.ln1_gain.value.setOnes();
      b.ln2_gain.value.setOnes();
    }
    const std::vector<float> standard = alibi::slopes(c_.heads);
    for (int h = 0; h < c_.heads; ++h) slopes_.value(0, h) = S(standard[std::size_t(h)]);
  }

  std::vector<Parameter<S>*> parameters() {
    std::vector<Parameter<S>*> all{&embedding_, &final_gain_, &final_bias_};
    for (Block& b : blocks_)
      for (Parameter<S>* p : {&b.ln1_gain, &b.ln1_bias, &b.qkv, &b.out, &b.ln2_gain, &b.ln2_bias,
                              &b.up, &b.up_bias, &b.down, &b.down_bias})
        all.push_back(p);
    if (c_.positions == Positions::alibi_learned) all.push_back(&slopes_);
    return all;
  }
  const Matrix<S>& slopes() const { return slopes_.value; }

  /// Mean cross-entropy of predicting targets from tokens, `batch` sequences of `length`
  /// (row-major [batch, length]). With `learn`, also accumulates every parameter's gradient.
  double step(const std::vector<int>& tokens, const std::vector<int>& targets, Index batch,
              Index length, bool learn) {
    const int d = c_.dim, heads = c_.heads, dh = d / heads;
    const Index rows = batch * length;
    // Embedding, plus the sinusoids of the absolute positions for that scheme.
    x_.resize(rows, d);
    for (Index r = 0; r < rows; ++r) {
      x_.row(r) = embedding_.value.row(tokens[std::size_t(r)]);
      if (c_.positions == Positions::sinusoidal)
        for (Index i = 0; i < d; ++i) x_(r, i) += sinusoid<S>(long(r % length), i, d);
    }
    alibi::Params params;
    params.tail_tolerance = 0;                       // training: every key
    params.slopes.assign(std::size_t(heads), 0.0f);  // no positions: plain causal attention
    if (c_.positions == Positions::alibi || c_.positions == Positions::alibi_learned)
      for (int h = 0; h < heads; ++h) params.slopes[std::size_t(h)] = float(slopes_.value(0, h));
    const auto packed = [&](Matrix<S>& m, int part) {
      return alibi::make_view(m.data() + part * d, {batch, length, heads, dh},
                              {length * 3 * d, 3 * d, dh, 1});
    };
    const auto plain = [&](Matrix<S>& m) {
      return alibi::make_view(m.data(), batch, length, heads, dh);
    };

    for (Block& b : blocks_) {
      b.input = x_;
      b.ln1.forward(x_, b.ln1_gain.value, b.ln1_bias.value, b.h1);
      b.qkv_act.noalias() = b.h1 * b.qkv.value;
      // q and k, the first 2 * heads heads of the packed row, turn by their position.
      if (c_.positions == Positions::rotary)
        rotary(b.qkv_act, 2 * heads, dh, length, c_.rotary_base, false);
      b.attn.resize(rows, d);
      b.lse.resize(std::size_t(batch * heads * length));
      alibi::attention(alibi::TensorView<const S>(packed(b.qkv_act, 0)), packed(b.qkv_act, 1),
                       packed(b.qkv_act, 2), plain(b.attn), params, b.lse.data());
      b.x2.noalias() = x_ + b.attn * b.out.value;
      b.ln2.forward(b.x2, b.ln2_gain.value, b.ln2_bias.value, b.h2);
      b.u.noalias() = b.h2 * b.up.value;
      b.u.rowwise() += b.up_bias.value.row(0);
      b.g = gelu(b.u.array()).matrix();
      x_.noalias() = b.x2 + b.g * b.down.value;
      x_.rowwise() += b.down_bias.value.row(0);
    }
    final_ln_.forward(x_, final_gain_.value, final_bias_.value, final_);
    logits_.noalias() = final_ * embedding_.value.transpose();
    const double loss = cross_entropy(logits_, targets, learn ? &dlogits_ : nullptr);
    if (!learn) return loss;

    // Backward, in reverse.
    Matrix<S> dx, dtmp;
    embedding_.grad.noalias() += dlogits_.transpose() * final_;
    dtmp.noalias() = dlogits_ * embedding_.value;
    final_ln_.backward(dtmp, final_gain_.value, dx, final_gain_.grad, final_bias_.grad);
    std::vector<float> dslopes(std::size_t(heads), 0.0f), total_dslopes(std::size_t(heads), 0.0f);
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) {
      Block& b = *it;
      // MLP: x3 = x2 + gelu(h2 up + up_bias) down + down_bias.
      b.down.grad.noalias() += b.g.transpose() * dx;
      b.down_bias.grad.row(0) += dx.colwise().sum();
      Matrix<S> du =
          ((dx * b.down.value.transpose()).array() * gelu_derivative(b.u.array())).matrix();
      b.up.grad.noalias() += b.h2.transpose() * du;
      b.up_bias.grad.row(0) += du.colwise().sum();
      dtmp.noalias() = du * b.up.value.transpose();
      Matrix<S> dln;
      b.ln2.backward(dtmp, b.ln2_gain.value, dln, b.ln2_gain.grad, b.ln2_bias.grad);
      Matrix<S> dx2 = dx + dln;
      // Attention: x2 = x + attn out.
      b.out.grad.noalias() += b.attn.transpose() * dx2;
      Matrix<S> dattn = dx2 * b.out.value.transpose();
      Matrix<S> dqkv(rows, 3 * d);
      alibi::attention_backward(
          alibi::TensorView<const S>(packed(b.qkv_act, 0)), packed(b.qkv_act, 1),
          packed(b.qkv_act, 2), plain(b.attn), plain(dattn), b.lse.data(), packed(dqkv, 0),
          packed(dqkv, 1), packed(dqkv, 2), params,
          c_.positions == Positions::alibi_learned ? dslopes.data() : nullptr);
      for (int h = 0; h < heads; ++h) total_dslopes[std::size_t(h)] += dslopes[std::size_t(h)];
      if (c_.positions == Positions::rotary)
        rotary(dqkv, 2 * heads, dh, length, c_.rotary_base, true);
      b.qkv.grad.noalias() += b.h1.transpose() * dqkv;
      dtmp.noalias() = dqkv * b.qkv.value.transpose();
      b.ln1.backward(dtmp, b.ln1_gain.value, dln, b.ln1_gain.grad, b.ln1_bias.grad);
      dx = dx2 + dln;
    }
    for (Index r = 0; r < rows; ++r) embedding_.grad.row(tokens[std::size_t(r)]) += dx.row(r);
    if (c_.positions == Positions::alibi_learned)
      for (int h = 0; h < heads; ++h) slopes_.grad(0, h) += S(total_dslopes[std::size_t(h)]);
    return loss;
  }

  void zero_grad() {
    for (Parameter<S>* p : parameters()) p->grad.setZero();
  }

  /// Clips the global gradient norm to max_norm, then one AdamW step; returns the norm.
  double adamw(double lr, double weight_decay, double max_norm, int step) {
    double squares = 0;
    for (Parameter<S>* p : parameters()) squares += double(p->grad.squaredNorm());
    const double norm = std::sqrt(squares), clip = norm > max_norm ? max_norm / norm : 1.0;
    const double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
    const double c1 = 1 - std::pow(beta1, step), c2 = 1 - std::pow(beta2, step);
    for (Parameter<S>* p : parameters()) {
      for (Index i = 0; i < p->value.size(); ++i) {
        const double g = double(p->grad.data()[i]) * clip;
        double& m = p->moments[std::size_t(2 * i)];
        double& v = p->moments[std::size_t(2 * i + 1)];
        m = beta1 * m + (1 - beta1) * g;
        v = beta2 * v + (1 - beta2) * g * g;
        double w = double(p->value.data()[i]);
        if (p->decay) w -= lr * weight_decay * w;
        w -= lr * (m / c1) / (std::sqrt(v / c2) + eps);
        p->value.data()[i] = S(w);
      }
    }
    return norm;
  }

 private:
  struct Block {
    Parameter<S> ln1_gain, ln1_bias, qkv, out, ln2_gain, ln2_bias, up, up_bias, down, down_bias;
    LayerNorm<S> ln1, ln2;
    Matrix<S> input, h1, qkv_act, attn, x2, h2, u, g;
    std::vector<float> lse;
    explicit Block(int d)
        : ln1_gain(1, d, false),
          ln1_bias(1, d, false),
          qkv(d, 3 * d, true),
          out(d, d, true),
          ln2_gain(1, d, false),
          ln2_bias(1, d, false),
          up(d, 4 * d, true),
          up_bias(1, 4 * d, false),
          down(4 * d, d, true),
          down_bias(1, d, false) {}
  };

  Config c_;
  Parameter<S> embedding_, final_gain_, final_bias_, slopes_;
  std::vector<Block> blocks_;
  LayerNorm<S> final_ln_;
  Matrix<S> x_, final_, logits_, dlogits_;
};

}  // namespace train
