// fill_bias and bias_matrix against the formula of DESIGN.md, written out here elementwise with no
// use of detail::Geometry; and the bias plugged into a plain softmax against the reference.
#include <alibi/bias.hpp>
#include <alibi/reference.hpp>
#include <alibi/slopes.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

using alibi::index_t;
using alibi::Params;

constexpr float minus_inf = -std::numeric_limits<float>::infinity();

float oracle_slope(const Params& p, index_t b, index_t h, index_t heads) {
  const std::vector<float> s = p.slopes.empty() ? alibi::slopes(static_cast<int>(heads)) : p.slopes;
  return static_cast<index_t>(s.size()) == heads ? s[static_cast<std::size_t>(h)]
                                                 : s[static_cast<std::size_t>(b * heads + h)];
}

// The bias of one (b, h) straight from the contract: positions, mask elementwise, one rounding.
std::vector<float> oracle_head(const Params& p, index_t H, index_t Sq, index_t Sk, index_t b,
                               index_t h) {
  const index_t len = p.seqlens_k.empty() ? Sk : p.seqlens_k[static_cast<std::size_t>(b)];
  const index_t key_offset = p.key_offset.value_or(0);
  const float slope = oracle_slope(p, b, h, H);
  std::vector<float> out(static_cast<std::size_t>(Sq * Sk));
  for (index_t i = 0; i < Sq; ++i) {
    const index_t pos = p.query_offset ? *p.query_offset + i : key_offset + len - Sq + i;
    for (index_t t = 0; t < Sk; ++t) {
      const index_t key = key_offset + t;
      bool allowed = t < len;
      if (p.causal && key > pos) allowed = false;
      if (p.window_left >= 0 && key < pos - p.window_left) allowed = false;
      if (p.window_right >= 0 && key > pos + p.window_right) allowed = false;
      const index_t distance = pos >= key ? pos - key : key - pos;
      out[static_cast<std::size_t>(i * Sk + t)] =
          allowed ? -slope * static_cast<float>(distance) : minus_inf;
    }
  }
  return out;
}

std::string describe(const Params& p, index_t B, index_t H, index_t Sq, index_t Sk) {
  std::ostringstream os;
  os << "B " << B << " H " << H << " Sq " << Sq << " Sk " << Sk << " causal " << p.causal
     << " window (" << p.window_left << ", " << p.window_right << ") query_offset "
     << (p.query_offset ? std::to_string(*p.query_offset) : "unset") << " key_offset "
     << (p.key_offset ? std::to_string(*p.key_offset) : "unset") << " seqlens_k "
     << p.seqlens_k.size() << " slopes " << p.slopes.size();
  return os.str();
}

// Exact agreement, element by element (-inf == -inf; finite values must be the same float).
struct Comparison {
  index_t mismatches = 0, allowed = 0, masked = 0;
};
Comparison compare(const float* got, const std::vector<float>& want) {
  Comparison c;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (got[i] != want[i]) ++c.mismatches;
    (want[i] == minus_inf ? c.masked : c.allowed) += 1;
  }
  return c;
}

}  // namespace

TEST_CASE("bias_matrix: a small causal case by hand", "[bias]") {
  // Sq = 2 against Sk = 4, bottom-right: queries sit at positions 2 and 3.
  const alibi::BiasMatrix m = alibi::bias_matrix(0.5f, 2, 4);
  REQUIRE(m.rows() == 2);
  REQUIRE(m.cols() == 4);
  CHECK(m(0, 0) == -1.0f);
  CHECK(m(0, 1) == -0.5f);
  CHECK(m(0, 2) == 0.0f);
  CHECK(m(0, 3) == minus_inf);
  CHECK(m(1, 0) == -1.5f);
  CHECK(m(1, 1) == -1.0f);
  CHECK(m(1, 2) == -0.5f);
  CHECK(m(1, 3) == 0.0f);
}

TEST_CASE("fill_bias and bias_matrix match the formula over masks, offsets and lengths", "[bias]") {
  const index_t B = 3, H = 2;
  struct Shape {
    index_t sq, sk;
  };
  struct Window {
    index_t left, right;
  };
  struct Offsets {
    std::optional<index_t> query, key;
  };
  const Shape shapes[] = {{3, 7}, {5, 5}, {7, 3}, {1, 6}};
  const Window windows[] = {{-1, -1}, {2, -1}, {-1, 1}, {2, 1}, {0, 0}, {1, 3}};
  const Offsets offsets[] = {{std::nullopt, std::nullopt},
                             {4, std::nullopt},
                             {std::nullopt, -3},
                             {-2, 5},
                             {-5, -9},
                             {std::nullopt, 6},
                             {0, 0},
                             {-4, std::nullopt}};

  Comparison total;
  index_t cases = 0;
  for (const bool causal : {true, false})
    for (const Shape& shape : shapes)
      for (const Window& window : windows)
        for (const Offsets& offset : offsets)
          for (int lengths = 0; lengths < 2; ++lengths)
            for (int slope_kind = 0; slope_kind < 3; ++slope_kind) {
              Params p;
              p.causal = causal;
              p.window_left = window.left;
              p.window_right = window.right;
              p.query_offset = offset.query;
              p.key_offset = offset.key;
              p.scale = 0.125f;  // must not matter
              if (lengths == 1) p.seqlens_k = {shape.sk, shape.sk - 2, 0};
              if (slope_kind == 1) p.slopes = {0.75f, 0.0f};  // per head, one without bias
              if (slope_kind == 2)  // per (batch, head), none a power of two
                p.slopes = {0.3f, 0.7f, 1.1f, 0.05f, 2.5f, 0.9f};

              const index_t sq = shape.sq, sk = shape.sk;
              INFO(describe(p, B, H, sq, sk));
              std::vector<float> got(static_cast<std::size_t>(B * H * sq * sk), 42.0f);
              alibi::fill_bias(got.data(), B, H, sq, sk, p);
              ++cases;
              for (index_t b = 0; b < B; ++b)
                for (index_t h = 0; h < H; ++h) {
                  INFO("b " << b << " h " << h);
                  const float* slice = got.data() + (b * H + h) * sq * sk;
                  const std::vector<float> want = oracle_head(p, H, sq, sk, b, h);
                  const Comparison c = compare(slice, want);
                  if (c.mismatches != 0) CHECK(c.mismatches == 0);  // one report per bad slice
                  total.mismatches += c.mismatches;
                  total.allowed += c.allowed;
                  total.masked += c.masked;

                  // bias_matrix only knows batch rows through seqlens_k.
                  const index_t row = p.seqlens_k.empty() ? 0 : b;
                  const alibi::BiasMatrix m =
                      alibi::bias_matrix(oracle_slope(p, b, h, H), sq, sk, p, row);
                  REQUIRE(m.rows() == sq);
                  REQUIRE(m.cols() == sk);
                  const Comparison cm = compare(m.data(), want);
                  if (cm.mismatches != 0) CHECK(cm.mismatches == 0);
                  total.mismatches += cm.mismatches;
                }
            }
  CHECK(cases == 2 * 4 * 6 * 8 * 2 * 3);
  CHECK(total.mismatches == 0);
  // The grid exercises both outcomes plenty.
  CHECK(total.allowed > 1000);
  CHECK(total.masked > 1000);
}

TEST_CASE("fill_bias: default slopes are alibi::slopes(H)", "[bias]") {
  const index_t H = 4, Sq = 3, Sk = 6;
  Params p;  // causal, bottom-right
  std::vector<float> got(static_cast<std::size_t>(H * Sq * Sk));
  alibi::fill_bias(got.data(), 1, H, Sq, Sk, p);
  const std::vector<float> s = alibi::slopes(static_cast<int>(H));
  for (index_t h = 0; h < H; ++h) {
    Params explicit_slopes;
    explicit_slopes.slopes = s;
    const Comparison c =
        compare(got.data() + h * Sq * Sk, oracle_head(explicit_slopes, H, Sq, Sk, 0, h));
    CHECK(c.mismatches == 0);
  }
  // Head 0 (slope 2^-2 for H = 4), last query at position 5: key 0 is 5 away.
  CHECK(got[static_cast<std::size_t>(2 * Sk)] == -1.25f);
}

TEST_CASE("bias exact at long range: decode row over 2^20 keys", "[bias]") {
  const index_t Sk = index_t(1) << 20;
  const float slope = 1.0f / 256.0f;  // 2^-8
  Params p;
  p.slopes = {slope};
  std::vector<float> row(static_cast<std::size_t>(Sk));
  alibi::fill_bias(row.data(), 1, 1, 1, Sk, p);
  index_t wrong = 0, not_finite = 0, not_increasing = 0;
  for (index_t t = 0; t < Sk; ++t) {
    const float v = row[static_cast<std::size_t>(t)];
    if (v != -slope * static_cast<float>(Sk - 1 - t)) ++wrong;
    if (!std::isfinite(v)) ++not_finite;
    // Strictly increasing toward the query, so every entry is distinct.
    if (t > 0 && !(row[static_cast<std::size_t>(t - 1)] < v)) ++not_increasing;
  }
  CHECK(wrong == 0);
  CHECK(not_finite == 0);
  CHECK(not_increasing == 0);
  CHECK(row.back() == 0.0f);
  CHECK(row.front() == -4095.99609375f);  // -(2^20 - 1) / 256
}

TEST_CASE("bias exact far from the origin: distances are taken before the float conversion",
          "[bias]") {
  // Positions near 2^40 are not representable at unit spacing in float; their differences are.
  const index_t Sk = 64;
  Params p;
  p.slopes = {0.5f};
  p.key_offset = index_t(1) << 40;
  std::vector<float> row(static_cast<std::size_t>(Sk));
  alibi::fill_bias(row.data(), 1, 1, 1, Sk, p);
  index_t wrong = 0;
  for (index_t t = 0; t < Sk; ++t)
    if (row[static_cast<std::size_t>(t)] != -0.5f * static_cast<float>(Sk - 1 - t)) ++wrong;
  CHECK(wrong == 0);
}

TEST_CASE("fill_bias: bidirectional at the extreme offsets the validator accepts", "[bias]") {
  // query_offset = 2^59 and key_offset = -2^59, the largest accepted: with no window every key is
  // allowed and the distances (about 2^60) are finite. The unbounded window (2^62) added to such a
  // position must not overflow int64 and mask every key.
  const index_t big = index_t(1) << 59;
  Params p;
  p.causal = false;
  p.slopes = {1.0f};
  p.query_offset = big;
  p.key_offset = -big;
  std::vector<float> row(2, 42.0f);
  alibi::fill_bias(row.data(), 1, 1, 1, 2, p);
  const std::vector<float> want = oracle_head(p, 1, 1, 2, 0, 0);
  CHECK(std::isfinite(want[0]));
  CHECK(row[0] == want[0]);
  CHECK(row[1] == want[1]);
}

TEST_CASE("softmax(scale q k^T + fill_bias) equals reference::attention", "[bias]") {
  const index_t B = 2, H = 2, Sq = 5, Sk = 9, D = 4;
  std::vector<double> q(static_cast<std::size_t>(B * Sq * H * D)),
      k(static_cast<std::size_t>(B * Sk * H * D)), v(k.size());
  // Deterministic values in [-1, 1].
  unsigned state = 12345u;
  const auto next = [&state] {
    state = state * 1664525u + 1013904223u;
    return static_cast<double>(state >> 8) / double(1u << 23) - 1.0;
  };
  for (auto* x : {&q, &k, &v})
    for (double& e : *x) e = next();
  const auto qv = alibi::make_view<const double>(q.data(), B, Sq, H, D);
  const auto kv = alibi::make_view<const double>(k.data(), B, Sk, H, D);
  const auto vv = alibi::make_view<const double>(v.data(), B, Sk, H, D);

  // Power-of-two slopes and small distances: the float bias is exact, so the double reference
  // (which forms slope * distance in double) sees the same logits.
  Params base;
  base.causal = true;
  base.window_left = 3;
  base.scale = 0.375f;  // exact in float and double
  base.slopes = {0.5f, 0.125f};

  for (int variant = 0; variant < 2; ++variant) {
    Params p = base;
    // Second variant: a short batch row, so Sq > its length and early queries have no key.
    if (variant == 1) p.seqlens_k = {Sk, 3};
    INFO("variant " << variant);

    std::vector<float> bias(static_cast<std::size_t>(B * H * Sq * Sk));
    alibi::fill_bias(bias.data(), B, H, Sq, Sk, p);
    std::vector<double> want(q.size());
    alibi::reference::attention<double>(qv, kv, vv, alibi::make_view(want.data(), B, Sq, H, D), p);

    index_t bad = 0, empty_rows = 0;
    double worst = 0;
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < Sq; ++i) {
          const float* brow = bias.data() + ((b * H + h) * Sq + i) * Sk;
          std::vector<double> logit(static_cast<std::size_t>(Sk));
          double max = -std::numeric_limits<double>::infinity();
          for (index_t t = 0; t < Sk; ++t) {
            double dot = 0;
            for (index_t d = 0; d < D; ++d) dot += qv(b, i, h, d) * kv(b, t, h, d);
            logit[static_cast<std::size_t>(t)] = double(p.scale) * dot + double(brow[t]);
            max = std::max(max, logit[static_cast<std::size_t>(t)]);
          }
          std::vector<double> acc(static_cast<std::size_t>(D), 0.0);
          double sum = 0;
          if (max != -std::numeric_limits<double>::infinity())
            for (index_t t = 0; t < Sk; ++t) {
              const double w = std::exp(logit[static_cast<std::size_t>(t)] - max);
              sum += w;
              for (index_t d = 0; d < D; ++d)
                acc[static_cast<std::size_t>(d)] += w * vv(b, t, h, d);
            }
          if (sum == 0) ++empty_rows;  // no allowed key: out = 0
          for (index_t d = 0; d < D; ++d) {
            const double got = sum == 0 ? 0.0 : acc[static_cast<std::size_t>(d)] / sum;
            const double ref = want[static_cast<std::size_t>(((b * Sq + i) * H + h) * D + d)];
            // Relative, floored at the data's scale (|v| <= 1) so near-zero outputs don't
            // turn round-off into a failure.
            const double err = std::abs(got - ref) / std::max(1.0, std::abs(ref));
            worst = std::max(worst, err);
            if (!(err <= 1e-12)) ++bad;
          }
        }
    INFO("worst relative error " << worst);
    CHECK(bad == 0);
    CHECK(empty_rows == (variant == 1 ? H * 2 : 0));
  }
}
