// TensorView addressing: contiguous and explicit strides, packed QKV read in place, Eigen tensors
// and maps, const conversion, empty views and negative strides.
#include <alibi/attention.hpp>
#include <alibi/tensor_view.hpp>

#include <catch2/catch.hpp>

#include <cstring>
#include <type_traits>
#include <vector>

#include <unsupported/Eigen/CXX11/Tensor>

namespace {

using alibi::index_t;
using alibi::TensorView;

// A distinct, exactly representable value per coordinate, so a wrong address reads a wrong value.
float tag(index_t a, index_t b, index_t c, index_t d, index_t e = 0) {
  return static_cast<float>((((a * 10 + b) * 10 + c) * 10 + d) * 10 + e);
}

}  // namespace

TEST_CASE("make_view: contiguous strides and addressing", "[tensor_view]") {
  const index_t B = 2, S = 3, H = 4, D = 5;
  std::vector<float> buf(static_cast<std::size_t>(B * S * H * D));
  const TensorView<float> v = alibi::make_view(buf.data(), B, S, H, D);

  CHECK(v.data == buf.data());
  CHECK(v.batch() == B);
  CHECK(v.seq() == S);
  CHECK(v.heads() == H);
  CHECK(v.head_dim() == D);
  CHECK(v.size() == B * S * H * D);
  CHECK(v.strides == std::array<index_t, 4>{S * H * D, H * D, D, 1});

  // Write through the view, read the buffer in row-major BSHD order.
  for (index_t b = 0; b < B; ++b)
    for (index_t s = 0; s < S; ++s)
      for (index_t h = 0; h < H; ++h) {
        CHECK(v.row(b, s, h) == buf.data() + ((b * S + s) * H + h) * D);
        for (index_t d = 0; d < D; ++d) v(b, s, h, d) = tag(b, s, h, d);
      }
  bool all_match = true;
  for (index_t b = 0; b < B; ++b)
    for (index_t s = 0; s < S; ++s)
      for (index_t h = 0; h < H; ++h)
        for (index_t d = 0; d < D; ++d)
          all_match = all_match && buf[static_cast<std::size_t>(((b * S + s) * H + h) * D + d)] ==
                                       tag(b, s, h, d);
  CHECK(all_match);
}

TEST_CASE("make_view: explicit strides address data[sum(i * stride)]", "[tensor_view]") {
  // Padded and interleaved: head_dim stride 2, every level padded, so no stride is a product of
  // the extents below it.
  const std::array<index_t, 4> shape{2, 3, 2, 3}, strides{97, 29, 11, 2};
  std::vector<double> buf(2 * 97);
  const TensorView<double> v = alibi::make_view(buf.data(), shape, strides);
  CHECK(v.shape == shape);
  CHECK(v.strides == strides);
  CHECK(v.size() == 2 * 3 * 2 * 3);
  for (index_t b = 0; b < 2; ++b)
    for (index_t s = 0; s < 3; ++s)
      for (index_t h = 0; h < 2; ++h) {
        CHECK(v.row(b, s, h) == buf.data() + b * 97 + s * 29 + h * 11);
        for (index_t d = 0; d < 3; ++d)
          CHECK(&v(b, s, h, d) == buf.data() + b * 97 + s * 29 + h * 11 + d * 2);
      }
}

TEST_CASE("packed QKV [B, S, 3, H, D] read in place", "[tensor_view]") {
  const index_t B = 2, S = 7, H = 3, D = 8;
  std::vector<float> packed(static_cast<std::size_t>(B * S * 3 * H * D));
  for (index_t b = 0; b < B; ++b)
    for (index_t s = 0; s < S; ++s)
      for (index_t c = 0; c < 3; ++c)
        for (index_t h = 0; h < H; ++h)
          for (index_t d = 0; d < D; ++d)
            packed[static_cast<std::size_t>((((b * S + s) * 3 + c) * H + h) * D + d)] =
                tag(b, s, c, h, d) * 1e-4f;  // small, so the softmax is not one-hot

  // The layout documented in tensor_view.hpp.
  const std::array<index_t, 4> shape{B, S, H, D}, strides{S * 3 * H * D, 3 * H * D, D, 1};
  const TensorView<const float> q = alibi::make_view<const float>(packed.data(), shape, strides);
  const TensorView<const float> k =
      alibi::make_view<const float>(packed.data() + H * D, shape, strides);
  const TensorView<const float> v =
      alibi::make_view<const float>(packed.data() + 2 * H * D, shape, strides);

  // Unpacked contiguous copies, filled from the packed buffer's own index formula.
  std::vector<float> qc(static_cast<std::size_t>(B * S * H * D)), kc(qc.size()), vc(qc.size());
  const auto qcv = alibi::make_view(qc.data(), B, S, H, D);
  const auto kcv = alibi::make_view(kc.data(), B, S, H, D);
  const auto vcv = alibi::make_view(vc.data(), B, S, H, D);
  bool views_match = true;
  for (index_t b = 0; b < B; ++b)
    for (index_t s = 0; s < S; ++s)
      for (index_t h = 0; h < H; ++h)
        for (index_t d = 0; d < D; ++d) {
          qcv(b, s, h, d) = tag(b, s, 0, h, d) * 1e-4f;
          kcv(b, s, h, d) = tag(b, s, 1, h, d) * 1e-4f;
          vcv(b, s, h, d) = tag(b, s, 2, h, d) * 1e-4f;
          views_match = views_match && q(b, s, h, d) == qcv(b, s, h, d) &&
                        k(b, s, h, d) == kcv(b, s, h, d) && v(b, s, h, d) == vcv(b, s, h, d);
        }
  REQUIRE(views_match);

  // Strides must not change the arithmetic: the fused kernel on the packed views is bitwise the
  // kernel on the copies.
  for (const bool causal : {true, false}) {
    INFO("causal " << causal);
    alibi::Params params;
    params.causal = causal;
    std::vector<float> out_packed(qc.size(), -1.0f), out_copy(qc.size(), -2.0f);
    alibi::attention<float>(q, k, v, alibi::make_view(out_packed.data(), B, S, H, D), params);
    alibi::attention<float>(qcv, kcv, vcv, alibi::make_view(out_copy.data(), B, S, H, D), params);
    CHECK(std::memcmp(out_packed.data(), out_copy.data(), out_packed.size() * sizeof(float)) == 0);
    // Not vacuous: the output is not the -1/-2 fill.
    CHECK(out_packed[0] != -1.0f);
  }
}

TEST_CASE("make_view of Eigen::Tensor and Eigen::TensorMap", "[tensor_view]") {
  using Tensor4 = Eigen::Tensor<float, 4, Eigen::RowMajor>;
  Tensor4 t(2, 3, 4, 5);
  for (Eigen::Index i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(i);

  // Every element of v is the element of t at the same (b, s, h, d), by address.
  const auto same_addressing = [](const auto& v, const auto& eigen) {
    bool ok = v.shape == std::array<index_t, 4>{eigen.dimension(0), eigen.dimension(1),
                                                eigen.dimension(2), eigen.dimension(3)};
    for (index_t b = 0; ok && b < v.batch(); ++b)
      for (index_t s = 0; s < v.seq(); ++s)
        for (index_t h = 0; h < v.heads(); ++h)
          for (index_t d = 0; d < v.head_dim(); ++d)
            ok = ok && &v(b, s, h, d) == &eigen(b, s, h, d);
    return ok;
  };

  SECTION("mutable Tensor") {
    auto v = alibi::make_view(t);
    static_assert(std::is_same<decltype(v), TensorView<float>>::value, "mutable view");
    CHECK(same_addressing(v, t));
    v(1, 2, 3, 4) = -7.0f;  // writes reach the tensor
    CHECK(t(1, 2, 3, 4) == -7.0f);
  }
  SECTION("const Tensor") {
    const Tensor4& ct = t;
    auto v = alibi::make_view(ct);
    static_assert(std::is_same<decltype(v), TensorView<const float>>::value, "const view");
    CHECK(same_addressing(v, ct));
  }
  SECTION("TensorMap of mutable elements") {
    std::vector<float> buf(3 * 1 * 2 * 4);
    Eigen::TensorMap<Tensor4> m(buf.data(), 3, 1, 2, 4);
    auto v = alibi::make_view(m);
    static_assert(std::is_same<decltype(v), TensorView<float>>::value, "mutable map view");
    CHECK(v.data == buf.data());
    CHECK(same_addressing(v, m));
    v(2, 0, 1, 3) = 5.0f;
    CHECK(buf.back() == 5.0f);
  }
  SECTION("TensorMap of const elements") {
    const std::vector<float> buf(2 * 2 * 3 * 2, 1.0f);
    const Eigen::TensorMap<const Tensor4> m(buf.data(), 2, 2, 3, 2);
    auto v = alibi::make_view(m);
    static_assert(std::is_same<decltype(v), TensorView<const float>>::value, "const map view");
    CHECK(v.data == buf.data());
    CHECK(same_addressing(v, m));
  }
}

namespace {
index_t take_const(TensorView<const float> v) { return v.size(); }
}  // namespace

TEST_CASE("TensorView<float> converts implicitly to TensorView<const float>", "[tensor_view]") {
  static_assert(std::is_convertible<TensorView<float>, TensorView<const float>>::value,
                "mutable -> const is implicit");
  // The other direction would drop const, and unrelated element types must not convert.
  static_assert(!std::is_convertible<TensorView<const float>, TensorView<float>>::value,
                "const -> mutable is not allowed");
  static_assert(!std::is_convertible<TensorView<float>, TensorView<const double>>::value,
                "no conversion across element types");

  std::vector<float> buf(2 * 3 * 1 * 4);
  const auto strides = std::array<index_t, 4>{13, 4, 4, 1};
  TensorView<float> m = alibi::make_view(buf.data(), {2, 3, 1, 4}, strides);
  TensorView<const float> c = m;
  CHECK(c.data == m.data);
  CHECK(c.shape == m.shape);
  CHECK(c.strides == m.strides);
  CHECK(take_const(m) == 24);
}

TEST_CASE("size() is 0 when any extent is 0", "[tensor_view]") {
  for (int zero = 0; zero < 4; ++zero) {
    std::array<index_t, 4> shape{2, 3, 4, 5};
    shape[static_cast<std::size_t>(zero)] = 0;
    const TensorView<float> v = alibi::make_view<float>(nullptr, shape, {60, 20, 5, 1});
    INFO("zero extent at " << zero);
    CHECK(v.size() == 0);
  }
  CHECK(alibi::make_view<float>(nullptr, 0, 0, 0, 0).size() == 0);
}

TEST_CASE("negative strides: a view reading the sequence reversed", "[tensor_view]") {
  const index_t B = 2, S = 5, H = 2, D = 3;
  std::vector<float> buf(static_cast<std::size_t>(B * S * H * D));
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
  const auto fwd = alibi::make_view<const float>(buf.data(), B, S, H, D);
  // Start at the last position of batch 0 and step backwards along the sequence.
  const auto rev = alibi::make_view<const float>(buf.data() + (S - 1) * H * D, {B, S, H, D},
                                                 {S * H * D, -H * D, D, 1});
  bool ok = true;
  for (index_t b = 0; b < B; ++b)
    for (index_t s = 0; s < S; ++s)
      for (index_t h = 0; h < H; ++h) {
        ok = ok && rev.row(b, s, h) == fwd.row(b, S - 1 - s, h);
        for (index_t d = 0; d < D; ++d) ok = ok && rev(b, s, h, d) == fwd(b, S - 1 - s, h, d);
      }
  CHECK(ok);
  // The two ends, by hand.
  CHECK(rev.row(0, 0, 0) == buf.data() + (S - 1) * H * D);
  CHECK(rev.row(B - 1, S - 1, H - 1) == buf.data() + (B - 1) * S * H * D + (H - 1) * D);
}
