#pragma once
// The non-attention layers of the small transformer in train_short_test_long.cpp, each a forward
// and a hand-written backward over row-major matrices (one row per token). Templated on the
// scalar so that tests/test_train_layers.cpp checks every backward against finite differences in
// double. Example code, not part of the library.

#include <Eigen/Core>

#include <cmath>
#include <vector>

namespace train {

template <class S>
using Matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using Vector = Eigen::Matrix<S, 1, Eigen::Dynamic>;

/// Layer norm over each row: y = (x - mean) / sqrt(var + eps) * gain + bias. Keeps what the
/// backward needs.
template <class S>
struct LayerNorm {
  Matrix<S> normalized;   // (x - mean) / std
  Vector<S> inverse_std;  // per row, as a row vector

  /// gain and bias are 1 x n.
  void forward(const Matrix<S>& x, const Matrix<S>& gain, const Matrix<S>& bias, Matrix<S>& y) {
    const Eigen::Index n = x.cols();
    normalized.resize(x.rows(), n);
    inverse_std.resize(x.rows());
    y.resize(x.rows(), n);
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      const S mean = x.row(r).mean();
      const S var = (x.row(r).array() - mean).square().mean();
      inverse_std(r) = S(1) / std::sqrt(var + S(1e-5));
      normalized.row(r) = (x.row(r).array() - mean) * inverse_std(r);
      y.row(r) = normalized.row(r).cwiseProduct(gain.row(0)) + bias.row(0);
    }
  }
  /// dx from dy; adds to dgain and dbias (1 x n).
  void backward(const Matrix<S>& dy, const Matrix<S>& gain, Matrix<S>& dx, Matrix<S>& dgain,
                Matrix<S>& dbias) const {
    dx.resize(dy.rows(), dy.cols());
    for (Eigen::Index r = 0; r < dy.rows(); ++r) {
      dgain.row(0) += dy.row(r).cwiseProduct(normalized.row(r));
      dbias.row(0) += dy.row(r);
      const Vector<S> g = dy.row(r).cwiseProduct(gain.row(0));
      const S mean_g = g.mean(), mean_gx = g.cwiseProduct(normalized.row(r)).mean();
      dx.row(r) =
          inverse_std(r) * (g.array() - mean_g - normalized.row(r).array() * mean_gx).matrix();
    }
  }
};

/// GELU, tanh approximation, elementwise on an array (Eigen vectorises the float tanh, which a
/// scalar std::tanh per element would not: it was an eighth of a training step).
template <class Derived>
typename Derived::PlainObject gelu(const Eigen::ArrayBase<Derived>& x) {
  using S = typename Derived::Scalar;
  const S c = S(0.7978845608028654);  // sqrt(2 / pi)
  return S(0.5) * x * (S(1) + (c * (x + S(0.044715) * x.cube())).tanh());
}
template <class Derived>
typename Derived::PlainObject gelu_derivative(const Eigen::ArrayBase<Derived>& x) {
  using S = typename Derived::Scalar;
  const S c = S(0.7978845608028654);
  const typename Derived::PlainObject t = (c * (x + S(0.044715) * x.cube())).tanh();
  return S(0.5) * (S(1) + t) +
         S(0.5) * x * (S(1) - t.square()) * c * (S(1) + S(3 * 0.044715) * x.square());
}

/// Mean cross-entropy of logits [rows, V] against targets; writes dlogits = dloss/dlogits.
template <class S>
double cross_entropy(const Matrix<S>& logits, const std::vector<int>& targets, Matrix<S>* dlogits) {
  double total = 0;
  if (dlogits != nullptr) dlogits->resize(logits.rows(), logits.cols());
  for (Eigen::Index r = 0; r < logits.rows(); ++r) {
    const S max = logits.row(r).maxCoeff();
    const S sum = (logits.row(r).array() - max).exp().sum();
    const double log_sum = double(max) + std::log(double(sum));
    total += log_sum - double(logits(r, targets[std::size_t(r)]));
    if (dlogits != nullptr) {
      dlogits->row(r) = ((logits.row(r).array() - max).exp() / sum).matrix();
      (*dlogits)(r, targets[std::size_t(r)]) -= S(1);
    }
  }
  if (dlogits != nullptr) *dlogits /= S(logits.rows());
  return total / double(logits.rows());
}

/// Rotary position embedding (RoPE, Su et al.) in place on `heads` consecutive heads of
/// `head_dim` columns starting at column 0, the row's position being its index modulo `length`.
/// Half-split layout (GPT-NeoX, Hugging Face Llama): column i < head_dim / 2 pairs with
/// i + head_dim / 2 and the pair turns by the angle p * base^(-2i / head_dim). Each pair turns
/// by an orthogonal matrix, so the backward is the same call with `transpose` (the angle negated).
template <class S>
void rotary(Matrix<S>& x, Eigen::Index heads, Eigen::Index head_dim, Eigen::Index length,
            double base, bool transpose) {
  const Eigen::Index half = head_dim / 2;
  // The angles in double: at 32 x 64 positions the float product p * rate would lose digits.
  Matrix<S> cos(length, half), sin(length, half);
  for (Eigen::Index p = 0; p < length; ++p)
    for (Eigen::Index i = 0; i < half; ++i) {
      const double angle = double(p) * std::pow(base, -double(2 * i) / double(head_dim));
      cos(p, i) = S(std::cos(angle));
      sin(p, i) = S(transpose ? -std::sin(angle) : std::sin(angle));
    }
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const Eigen::Index p = r % length;
    for (Eigen::Index h = 0; h < heads; ++h)
      for (Eigen::Index i = 0; i < half; ++i) {
        S& a = x(r, h * head_dim + i);
        S& b = x(r, h * head_dim + half + i);
        const S a0 = a;
        a = a0 * cos(p, i) - b * sin(p, i);
        b = a0 * sin(p, i) + b * cos(p, i);
      }
  }
}

/// The sinusoidal position embedding of Vaswani et al. at position p, dimension d.
template <class S>
S sinusoid(long p, Eigen::Index i, Eigen::Index dim) {
  const double rate = std::pow(10000.0, -double(2 * (i / 2)) / double(dim));
  return S(i % 2 == 0 ? std::sin(double(p) * rate) : std::cos(double(p) * rate));
}

}  // namespace train
