// The hand-written backward of every layer of examples/train (the train-short-test-long
// example's model) against central finite differences in double, layer by layer and for the
// whole model with each position scheme.
#include "../examples/train/model.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <random>

namespace {

using train::Matrix;

Matrix<double> random_matrix(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  Matrix<double> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
  return m;
}

double dot(const Matrix<double>& a, const Matrix<double>& b) { return a.cwiseProduct(b).sum(); }

}  // namespace

TEST_CASE("layer norm backward matches finite differences", "[train]") {
  const Matrix<double> x = random_matrix(5, 7, 1), gain = random_matrix(1, 7, 2),
                       bias = random_matrix(1, 7, 3), weight = random_matrix(5, 7, 4);
  const auto loss = [&](const Matrix<double>& x_, const Matrix<double>& g_,
                        const Matrix<double>& b_) {
    train::LayerNorm<double> ln;
    Matrix<double> y;
    ln.forward(x_, g_, b_, y);
    return dot(y, weight);
  };
  train::LayerNorm<double> ln;
  Matrix<double> y, dx, dgain = Matrix<double>::Zero(1, 7), dbias = Matrix<double>::Zero(1, 7);
  ln.forward(x, gain, bias, y);
  ln.backward(weight, gain, dx, dgain, dbias);
  const double eps = 1e-6;
  for (int which = 0; which < 3; ++which) {
    const Matrix<double> dir = random_matrix(which == 0 ? 5 : 1, 7, 10 + which);
    const Matrix<double>& analytic = which == 0 ? dx : which == 1 ? dgain : dbias;
    Matrix<double> xp = x, xm = x, gp = gain, gm = gain, bp = bias, bm = bias;
    (which == 0 ? xp : which == 1 ? gp : bp) += eps * dir;
    (which == 0 ? xm : which == 1 ? gm : bm) -= eps * dir;
    const double fd = (loss(xp, gp, bp) - loss(xm, gm, bm)) / (2 * eps);
    CHECK(dot(analytic, dir) == Approx(fd).epsilon(1e-7));
  }
}

TEST_CASE("gelu derivative and cross-entropy gradient match finite differences", "[train]") {
  Eigen::ArrayXXd x(1, 5);
  x << -3.0, -0.7, 0.0, 0.4, 2.5;
  const double h = 1e-6;
  const Eigen::ArrayXXd analytic = train::gelu_derivative(x),
                        fd_gelu = (train::gelu(x + h) - train::gelu(x - h)) / (2 * h);
  for (Eigen::Index i = 0; i < x.size(); ++i)
    CHECK(analytic(i) == Approx(fd_gelu(i)).epsilon(1e-7));
  // Training runs the float path, where Eigen's vectorised tanh replaces std::tanh: against
  // the formula in double with std::tanh (a sweep long enough for the vector body and its
  // remainder). For x << 0, 1 + tanh cancels: the error is a few float ulps of 1 times 0.5 |x|.
  Eigen::ArrayXXf xf(1, 37);
  for (Eigen::Index i = 0; i < xf.size(); ++i) xf(i) = -6.0f + 0.33f * float(i);
  const Eigen::ArrayXXf yf = train::gelu(xf);
  for (Eigen::Index i = 0; i < xf.size(); ++i) {
    const double v = xf(i),
                 expected =
                     0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
    CHECK(double(yf(i)) == Approx(expected).epsilon(1e-6).margin(0.5 * std::abs(v) * 4 * 0x1p-23));
  }
  const Matrix<double> logits = random_matrix(4, 6, 5), dir = random_matrix(4, 6, 6);
  const std::vector<int> targets{0, 5, 2, 2};
  Matrix<double> grad;
  train::cross_entropy(logits, targets, &grad);
  const double eps = 1e-6;
  const double fd = (train::cross_entropy<double>(logits + eps * dir, targets, nullptr) -
                     train::cross_entropy<double>(logits - eps * dir, targets, nullptr)) /
                    (2 * eps);
  CHECK(dot(grad, dir) == Approx(fd).epsilon(1e-7));
}

TEST_CASE("rotary turns each half-split pair by position times its frequency", "[train]") {
  // Closed form: unit vector i of a head lands on (cos, sin) of p * base^(-2i / head_dim) in
  // columns i and i + head_dim / 2, unit vector i + head_dim / 2 on (-sin, cos).
  for (const Eigen::Index head_dim : {2, 4, 16}) {
    const Eigen::Index heads = 3, half = head_dim / 2, length = 37, batch = 2;
    for (const double base : {10000.0, 100.0}) {
      INFO("head_dim " << head_dim << " base " << base);
      for (Eigen::Index unit = 0; unit < head_dim; ++unit) {
        Matrix<double> x = Matrix<double>::Zero(batch * length, heads * head_dim);
        for (Eigen::Index r = 0; r < x.rows(); ++r)
          for (Eigen::Index h = 0; h < heads; ++h) x(r, h * head_dim + unit) = 1;
        train::rotary(x, heads, head_dim, length, base, false);
        const Eigen::Index i = unit % half;
        for (Eigen::Index r = 0; r < x.rows(); ++r) {
          const double angle = double(r % length) * std::pow(base, -2.0 * double(i) / head_dim);
          const double c = std::cos(angle), s = std::sin(angle);
          Matrix<double> expected = Matrix<double>::Zero(1, heads * head_dim);
          for (Eigen::Index h = 0; h < heads; ++h) {
            expected(0, h * head_dim + i) = unit < half ? c : -s;
            expected(0, h * head_dim + half + i) = unit < half ? s : c;
          }
          CHECK((x.row(r) - expected).cwiseAbs().maxCoeff() <= 1e-15);
        }
      }
    }
  }
}

TEST_CASE("rotary scores depend on the distance only, far past any training length", "[train]") {
  // q at position p, k at t: R_p q . R_t k = q . R_(t-p) k, written out pair by pair. Positions
  // up to 4096 cover 32 x 128, the longest evaluation; fp64 angles keep the error near 1e-12.
  const Eigen::Index head_dim = 16, half = head_dim / 2, length = 4096;
  const Matrix<double> q = random_matrix(1, head_dim, 21), k = random_matrix(1, head_dim, 22);
  Matrix<double> qs(length, head_dim), ks(length, head_dim);
  for (Eigen::Index r = 0; r < length; ++r) {
    qs.row(r) = q;
    ks.row(r) = k;
  }
  train::rotary(qs, 1, head_dim, length, 10000, false);
  train::rotary(ks, 1, head_dim, length, 10000, false);
  for (const Eigen::Index p : {0, 1, 63, 64, 1000, 4095})
    for (const Eigen::Index t : {0, 5, 64, 2047, 4095}) {
      double expected = 0;
      for (Eigen::Index i = 0; i < half; ++i) {
        const double angle = double(t - p) * std::pow(10000.0, -2.0 * double(i) / head_dim);
        const double ka = k(0, i) * std::cos(angle) - k(0, half + i) * std::sin(angle);
        const double kb = k(0, i) * std::sin(angle) + k(0, half + i) * std::cos(angle);
        expected += q(0, i) * ka + q(0, half + i) * kb;
      }
      INFO("p " << p << " t " << t);
      CHECK(qs.row(p).dot(ks.row(t)) == Approx(expected).margin(1e-11));
    }
}

TEST_CASE("rotary backward (the transposed turn) matches finite differences", "[train]") {
  for (const Eigen::Index head_dim : {2, 8}) {
    const Eigen::Index heads = 4, length = 9, rows = 2 * length;
    const Matrix<double> x = random_matrix(rows, heads * head_dim, 31),
                         weight = random_matrix(rows, heads * head_dim, 32),
                         dir = random_matrix(rows, heads * head_dim, 33);
    const auto loss = [&](const Matrix<double>& x_) {
      Matrix<double> y = x_;
      train::rotary(y, heads, head_dim, length, 10000, false);
      return dot(y, weight);
    };
    Matrix<double> dx = weight;
    train::rotary(dx, heads, head_dim, length, 10000, true);
    const double eps = 1e-6;
    CHECK(dot(dx, dir) ==
          Approx((loss(x + eps * dir) - loss(x - eps * dir)) / (2 * eps)).epsilon(1e-8));
    Matrix<double> back = x;  // and the transpose undoes the turn
    train::rotary(back, heads, head_dim, length, 10000, false);
    train::rotary(back, heads, head_dim, length, 10000, true);
    CHECK((back - x).cwiseAbs().maxCoeff() <= 1e-14);
  }
}

TEST_CASE("the whole model's gradients match finite differences for every scheme", "[train]") {
  for (const train::Positions scheme :
       {train::Positions::alibi, train::Positions::alibi_learned, train::Positions::rotary,
        train::Positions::sinusoidal, train::Positions::none}) {
    INFO(train::name(scheme));
    train::Config config;
    config.vocab = 11;
    config.dim = 8;
    config.heads = 2;
    config.layers = 2;
    config.positions = scheme;
    train::Model<double> model(config, 3);
    const std::vector<int> tokens{1, 2, 3, 4, 5, 6, 7, 8, 3, 3, 2, 1, 0, 9, 10, 4},
        targets{2, 3, 4, 5, 6, 7, 8, 9, 3, 2, 1, 0, 9, 10, 4, 4};
    model.zero_grad();
    model.step(tokens, targets, 2, 8, true);
    unsigned seed = 50;
    for (train::Parameter<double>* p : model.parameters()) {
      const Matrix<double> dir = random_matrix(p->value.rows(), p->value.cols(), seed++);
      const bool slopes =
          scheme == train::Positions::alibi_learned && p == model.parameters().back();
      // Slopes reach the kernel as float: step them by float-exact amounts and compare along the
      // step actually taken.
      const double eps = slopes ? 0x1p-12 : 1e-6;
      const Matrix<double> saved = p->value;
      Matrix<double> plus = saved + eps * dir, minus = saved - eps * dir;
      if (slopes) {
        plus = plus.cast<float>().cast<double>();
        minus = minus.cast<float>().cast<double>();
      }
      p->value = plus;
      const double up = model.step(tokens, targets, 2, 8, false);
      p->value = minus;
      const double down = model.step(tokens, targets, 2, 8, false);
      p->value = saved;
      CHECK(dot(p->grad, plus - minus) ==
            Approx(up - down).epsilon(slopes ? 1e-4 : 1e-6).margin(1e-12));
    }
  }
}
