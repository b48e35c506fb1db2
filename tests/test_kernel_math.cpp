// The vector exp of the softmax against std::exp over every argument the kernel feeds it
// (logit - running max, so [-inf, 0]), on whichever instruction set this build targets.
#include <alibi/detail/kernel_traits.hpp>
#include <alibi/detail/packet_math.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

/// exp_weight over a whole vector, a packet at a time, the way the kernel calls it.
template <class Scalar>
std::vector<Scalar> exp_weights(const std::vector<Scalar>& x) {
  using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
  constexpr std::size_t width = Eigen::internal::packet_traits<Scalar>::size;
  std::vector<Scalar> y(x.size());
  for (std::size_t i = 0; i + width <= x.size(); i += width)
    Eigen::internal::pstoreu(&y[i],
                             alibi::detail::exp_weight(Eigen::internal::ploadu<Packet>(&x[i])));
  return y;
}

template <class Scalar>
double ulps(Scalar got, double want) {
  return std::fabs(double(got) - want) / (want * std::numeric_limits<Scalar>::epsilon());
}

}  // namespace

TEST_CASE("exp_weight is within a few ulps of exp on [-87, 0] (float)", "[kernel]") {
  // Every 613th float of [-87, 0] (stepping through the bit patterns): about 1.8 million
  // arguments, all exponents and mantissa patterns.
  std::vector<float> x;
  std::uint32_t bits;
  const float start = -87.0f;
  std::memcpy(&bits, &start, sizeof bits);
  for (; bits > 0x80000000u; bits -= 613) {  // negative floats: smaller magnitude, smaller bits
    float v;
    std::memcpy(&v, &bits, sizeof v);
    x.push_back(v);
  }
  while (x.size() % 16) x.push_back(0.0f);
  const std::vector<float> y = exp_weights(x);
  double worst = 0;
  float worst_at = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double e = ulps(y[i], std::exp(double(x[i])));
    if (e > worst) worst = e, worst_at = x[i];
  }
  INFO("worst " << worst << " ulp at " << worst_at);
  // The result is the softmax weight: two or three ulps is float round-off for the sums it feeds.
  CHECK(worst <= 3.0);
}

TEST_CASE("exp_weight is within a few ulps of exp on [-700, 0] (double)", "[kernel]") {
  std::vector<double> x;
  for (double v = -700.0; v <= 0.0; v += 0.0007) x.push_back(v);
  while (x.size() % 8) x.push_back(0.0);
  const std::vector<double> y = exp_weights(x);
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) worst = std::max(worst, ulps(y[i], std::exp(x[i])));
  CHECK(worst <= 3.0);
}

TEST_CASE("exp_weight is exactly 0 below the normal range and keeps NaN", "[kernel]") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  std::vector<float> x{-inf, -1e30f, -200.0f, -104.0f, -88.0f, -87.34f, 0.0f, nan};
  while (x.size() % 16) x.push_back(-inf);
  const std::vector<float> y = exp_weights(x);
  for (int i = 0; i < 6; ++i) CHECK(y[std::size_t(i)] == 0.0f);  // masked keys weigh nothing
  CHECK(y[6] == 1.0f);                                           // the row's max weighs one
  CHECK(std::isnan(y[7]));
  for (std::size_t i = 8; i < y.size(); ++i) CHECK(y[i] == 0.0f);
  std::vector<double> xd{-std::numeric_limits<double>::infinity(), -709.0, 0.0, std::nan("")};
  while (xd.size() % 8) xd.push_back(-1000.0);
  const std::vector<double> yd = exp_weights(xd);
  CHECK(yd[0] == 0.0);
  CHECK(yd[1] == 0.0);
  CHECK(yd[2] == 1.0);
  CHECK(std::isnan(yd[3]));
}

TEST_CASE("the kernels' packet is this instruction set's vector", "[kernel]") {
  // The aarch64 and scalar CI builds run these tests to cover those paths: fail if the build
  // silently fell back to another width (a lost -march, a toolchain without NEON).
  constexpr int floats = alibi::detail::kernel_traits<float>::width;
  constexpr int doubles = alibi::detail::kernel_traits<double>::width;
#if defined(EIGEN_DONT_VECTORIZE)
  CHECK(floats == 1);
  CHECK(doubles == 1);
#elif defined(__AVX512F__)
  CHECK(floats == 16);
  CHECK(doubles == 8);
#elif defined(__AVX__)
  CHECK(floats == 8);
  CHECK(doubles == 4);
#elif defined(__aarch64__) || defined(__SSE2__)
  CHECK(floats == 4);
  CHECK(doubles == 2);
#endif
#if defined(__aarch64__) && !defined(EIGEN_DONT_VECTORIZE)
  CHECK(alibi::detail::kernel_traits<float>::many_registers);  // NEON's 32 registers: 8 x 2 tiles
#endif
}
