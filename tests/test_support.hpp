#pragma once
// Test-only helpers: seeded random tensors, and the float64 oracle written straight from the
// ALiBi formula, sharing no code with the library (no Geometry, no TensorView indexing).

#include <alibi/alibi.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace alibi_test {

using alibi::index_t;

/// Sizes of one attention problem: q [B, Sq, Hq, D], k [B, Sk, Hkv, D], v [B, Sk, Hkv, Dv].
struct Shape {
  index_t batch = 1, seq_q = 1, seq_k = 1, heads_q = 1, heads_kv = 1, head_dim = 1, value_dim = 1;
  std::size_t q_size() const { return std::size_t(batch * seq_q * heads_q * head_dim); }
  std::size_t k_size() const { return std::size_t(batch * seq_k * heads_kv * head_dim); }
  std::size_t v_size() const { return std::size_t(batch * seq_k * heads_kv * value_dim); }
  std::size_t out_size() const { return std::size_t(batch * seq_q * heads_q * value_dim); }
  std::size_t lse_size() const { return std::size_t(batch * heads_q * seq_q); }
};

/// n values uniform in [-amplitude, amplitude], as T, from a fixed seed.
template <class T>
std::vector<T> random_values(std::size_t n, std::uint32_t seed, float amplitude = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-amplitude, amplitude);
  std::vector<T> x(n);
  for (T& e : x) e = T(uniform(rng));
  return x;
}

/// The output and lse of the oracle, contiguous [B, Sq, Hq, Dv] and [B, Hq, Sq].
struct Expected {
  std::vector<double> out, lse;
};

/// ALiBi attention from its definition, in double, over contiguous inputs. Positions: key t at
/// key_offset + t; query i at query_offset + i, or bottom-right (the last query at the last valid
/// key) when query_offset is unset. Key t is allowed for the query at p iff t < seqlens_k[b],
/// (not causal or key <= p), and p - window_left <= key <= p + window_right (-1: unbounded).
template <class T>
Expected oracle(const Shape& s, const std::vector<T>& q, const std::vector<T>& k,
                const std::vector<T>& v, const alibi::Params& params) {
  const std::vector<float> slopes =
      params.slopes.empty() ? alibi::slopes(int(s.heads_q)) : params.slopes;
  // The scale is a float parameter: its default is 1/sqrt(D) rounded to float, not the exact value.
  const double scale =
      params.scale != 0.0f ? params.scale : double(1.0f / std::sqrt(float(s.head_dim)));
  const index_t group = s.heads_q / s.heads_kv;
  const index_t key_offset = params.key_offset.value_or(0);
  Expected e{std::vector<double>(s.out_size()), std::vector<double>(s.lse_size())};
  for (index_t b = 0; b < s.batch; ++b) {
    const index_t valid = params.seqlens_k.empty() ? s.seq_k : params.seqlens_k[b];
    for (index_t h = 0; h < s.heads_q; ++h) {
      const double m =
          slopes.size() == std::size_t(s.heads_q) ? slopes[h] : slopes[b * s.heads_q + h];
      const index_t hk = h / group;
      for (index_t i = 0; i < s.seq_q; ++i) {
        const index_t p =
            params.query_offset ? *params.query_offset + i : key_offset + valid - s.seq_q + i;
        std::vector<double> logit;
        std::vector<index_t> keys, distances;
        for (index_t t = 0; t < valid; ++t) {
          const index_t key = key_offset + t;
          if (params.causal && key > p) continue;
          if (params.window_left >= 0 && key < p - params.window_left) continue;
          if (params.window_right >= 0 && key > p + params.window_right) continue;
          double dot = 0;
          for (index_t d = 0; d < s.head_dim; ++d)
            dot += double(q[((b * s.seq_q + i) * s.heads_q + h) * s.head_dim + d]) *
                   double(k[((b * s.seq_k + t) * s.heads_kv + hk) * s.head_dim + d]);
          logit.push_back(scale * dot);
          distances.push_back(std::llabs(p - key));
          keys.push_back(t);
        }
        // The bias from the nearest key on: the softmax is the same, and at 1e12 positions the
        // logits keep their digits; the lse gets -m nearest back.
        index_t nearest = 0;
        if (!distances.empty()) nearest = *std::min_element(distances.begin(), distances.end());
        for (std::size_t j = 0; j < logit.size(); ++j)
          logit[j] -= m * double(distances[j] - nearest);
        double max = -std::numeric_limits<double>::infinity();
        for (double x : logit) max = std::fmax(max, x);
        double sum = 0;
        for (double x : logit) sum += std::exp(x - max);
        for (index_t d = 0; d < s.value_dim; ++d) {
          double acc = 0;
          for (std::size_t j = 0; j < keys.size(); ++j)
            acc += std::exp(logit[j] - max) *
                   double(v[((b * s.seq_k + keys[j]) * s.heads_kv + hk) * s.value_dim + d]);
          e.out[((b * s.seq_q + i) * s.heads_q + h) * s.value_dim + d] =
              keys.empty() ? 0.0 : acc / sum;
        }
        e.lse[(b * s.heads_q + h) * s.seq_q + i] = keys.empty()
                                                       ? -std::numeric_limits<double>::infinity()
                                                       : max + std::log(sum) - m * double(nearest);
      }
    }
  }
  return e;
}

/// A named problem of one semantic class: the shapes and params the suites sweep.
struct Case {
  const char* name;
  Shape shape;
  alibi::Params params;
};

/// One case per semantic class of DESIGN.md, small enough for the float64 oracle.
inline std::vector<Case> semantic_cases() {
  std::vector<Case> cases;
  const auto add = [&](const char* name, Shape s, auto&& tweak) {
    alibi::Params p;
    tweak(p);
    cases.push_back({name, s, p});
  };
  const auto none = [](alibi::Params&) {};
  add("causal self-attention", {2, 70, 70, 4, 4, 16, 16}, none);
  add("bidirectional", {1, 70, 70, 4, 4, 16, 16}, [](alibi::Params& p) { p.causal = false; });
  add("decode row, bottom-right", {2, 1, 150, 2, 2, 8, 8}, none);
  add("chunked prefill Sq < Sk", {1, 20, 150, 2, 2, 8, 8}, none);
  add("more queries than keys: leading rows empty", {1, 40, 25, 2, 2, 8, 8}, none);
  add("bidirectional Sq < Sk", {1, 20, 150, 2, 1, 8, 8},
      [](alibi::Params& p) { p.causal = false; });
  add("value dim differs from head dim", {1, 33, 47, 2, 2, 5, 11}, none);
  add("GQA 8 / 2", {1, 30, 40, 8, 2, 8, 8}, none);
  add("MQA with more query heads than a task has rows", {1, 3, 40, 136, 1, 8, 8}, none);
  add("MQA 4 / 1, bidirectional", {1, 30, 40, 4, 1, 8, 8},
      [](alibi::Params& p) { p.causal = false; });
  add("sliding window left", {1, 90, 90, 2, 2, 8, 8}, [](alibi::Params& p) { p.window_left = 9; });
  add("window both sides, bidirectional", {1, 90, 90, 2, 2, 8, 8}, [](alibi::Params& p) {
    p.causal = false;
    p.window_left = 5;
    p.window_right = 17;
  });
  add("window right only, bidirectional", {1, 50, 70, 2, 2, 8, 8}, [](alibi::Params& p) {
    p.causal = false;
    p.window_right = 0;
  });
  add("window 0: each query sees itself", {1, 30, 30, 2, 2, 8, 8},
      [](alibi::Params& p) { p.window_left = 0; });
  add("per-(batch, head) slopes", {3, 20, 30, 2, 2, 8, 8},
      [](alibi::Params& p) { p.slopes = {0.5f, 0.0f, 0.125f, 1.0f, 2.0f, 0.03f}; });
  add("explicit slopes and scale", {1, 20, 30, 3, 3, 8, 8}, [](alibi::Params& p) {
    p.slopes = {0.7f, 0.01f, 0.0f};
    p.scale = 0.9f;
  });
  add("query and key offsets", {1, 20, 50, 2, 2, 8, 8}, [](alibi::Params& p) {
    p.key_offset = 1000;
    p.query_offset = 1030;
  });
  add("negative offsets, bidirectional", {1, 20, 50, 2, 2, 8, 8}, [](alibi::Params& p) {
    p.causal = false;
    p.key_offset = -70;
    p.query_offset = -40;
  });
  add("queries before every key: all rows empty", {1, 10, 20, 2, 2, 8, 8},
      [](alibi::Params& p) { p.query_offset = -50; });
  add("ragged batch seqlens_k", {3, 12, 60, 2, 2, 8, 8}, [](alibi::Params& p) {
    p.seqlens_k = {60, 17, 0};
  });
  add("seqlens_k with windows, bidirectional", {2, 30, 60, 2, 1, 8, 8}, [](alibi::Params& p) {
    p.causal = false;
    p.seqlens_k = {33, 60};
    p.window_left = 4;
    p.window_right = 6;
  });
  return cases;
}

/// Contiguous views of the four tensors of a Shape.
template <class T>
alibi::TensorView<T> q_view(const Shape& s, T* data) {
  return alibi::make_view(data, s.batch, s.seq_q, s.heads_q, s.head_dim);
}
template <class T>
alibi::TensorView<T> k_view(const Shape& s, T* data) {
  return alibi::make_view(data, s.batch, s.seq_k, s.heads_kv, s.head_dim);
}
template <class T>
alibi::TensorView<T> v_view(const Shape& s, T* data) {
  return alibi::make_view(data, s.batch, s.seq_k, s.heads_kv, s.value_dim);
}
template <class T>
alibi::TensorView<T> out_view(const Shape& s, T* data) {
  return alibi::make_view(data, s.batch, s.seq_q, s.heads_q, s.value_dim);
}

}  // namespace alibi_test
