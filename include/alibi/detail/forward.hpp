#pragma once
// The fused forward: one task is a block of queries of one (batch, head); it walks the key tiles
// that any of its rows may attend, with the online softmax, and never holds more than one
// query_block x key_block tile of scores. Extra memory is O(threads x tile), independent of Sk.

#include <limits>
#include <vector>

#include <Eigen/Core>

#include "geometry.hpp"
#include "kernel_traits.hpp"
#include "numeric.hpp"
#include "online_softmax.hpp"
#include "parallel.hpp"

namespace alibi {
namespace detail {

/// Copies rows [row0, row0 + rows) of one head, head vectors of length `dim`, into a tile of the
/// accumulation type: the only place storage types (half, bfloat16, strides) are seen.
template <class T, class Tile>
void load_rows(const TensorView<const T>& x, index_t b, index_t h, index_t row0, index_t rows,
               Tile& tile) {
  using Acc = typename Tile::Scalar;
  const index_t dim = x.head_dim();
  for (index_t r = 0; r < rows; ++r) {
    Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>, 0, Eigen::InnerStride<>> src(
        x.row(b, row0 + r, h), dim, Eigen::InnerStride<>(x.strides[3]));
    tile.row(r).head(dim) = src.template cast<Acc>();
  }
}

template <class T>
class ForwardWorker {
  using Acc = accum_t<T>;
  using Tile = Eigen::Matrix<Acc, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  static constexpr index_t QB = kernel_traits::query_block;
  static constexpr index_t KB = kernel_traits::key_block;

 public:
  ForwardWorker(const Geometry& g, TensorView<const T> q, TensorView<const T> k,
                TensorView<const T> v, TensorView<T> out, float* lse)
      : g_(g),
        q_(q),
        k_(k),
        v_(v),
        out_(out),
        lse_(lse),
        q_tile_(QB, g.head_dim),
        k_tile_(KB, g.head_dim),
        v_tile_(KB, g.value_dim),
        scores_(QB, KB),
        output_(QB, g.value_dim),
        positions_(QB),
        ranges_(QB) {}

  /// Task = ((b * heads_q) + h) * query_blocks + query block.
  void operator()(index_t task) {
    const index_t query_blocks = (g_.seq_q + QB - 1) / QB;
    const index_t i0 = (task % query_blocks) * QB;
    const index_t h = (task / query_blocks) % g_.heads_q;
    const index_t b = task / query_blocks / g_.heads_q;
    const index_t rows = std::min(QB, g_.seq_q - i0);
    const index_t hk = g_.kv_head(h);
    const Acc slope = g_.slope(b, h);

    KeyRange span{std::numeric_limits<index_t>::max(), std::numeric_limits<index_t>::min()};
    for (index_t r = 0; r < rows; ++r) {
      positions_[r] = g_.query_position(b, i0 + r);
      ranges_[r] = g_.allowed_keys(b, positions_[r]);
      if (ranges_[r].empty()) continue;
      span.begin = std::min(span.begin, ranges_[r].begin);
      span.end = std::max(span.end, ranges_[r].end);
    }

    auto q_block = q_tile_.topRows(rows);
    load_rows(q_, b, h, i0, rows, q_block);
    q_block *= Acc(g_.scale);  // the bias is added after the scale, as in FlashAttention
    auto output = output_.topRows(rows);
    output.setZero();
    softmax_.reset(rows);

    for (index_t t0 = span.begin; t0 < span.end; t0 += KB) {
      const index_t cols = std::min(KB, span.end - t0);
      auto k_block = k_tile_.topRows(cols);
      auto v_block = v_tile_.topRows(cols);
      load_rows(k_, b, hk, t0, cols, k_block);
      load_rows(v_, b, hk, t0, cols, v_block);
      auto scores = scores_.topLeftCorner(rows, cols);
      // Coefficient-based products: Eigen's blocked GEMM would start OpenMP threads of its own
      // for each tile when this worker is alone.
      scores.noalias() = q_block.lazyProduct(k_block.transpose());
      add_bias_and_mask(scores, rows, cols, t0, slope);
      softmax_.update(scores, output);
      output.noalias() += scores.lazyProduct(v_block);
    }

    for (index_t r = 0; r < rows; ++r) {
      const Acc sum = softmax_.sum[r];
      // A row with no allowed key has sum 0: its output is 0, never 0/0.
      const Acc inverse = sum == Acc(0) ? Acc(0) : Acc(1) / sum;
      Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>, 0, Eigen::InnerStride<>> dst(
          out_.row(b, i0 + r, h), g_.value_dim, Eigen::InnerStride<>(out_.strides[3]));
      dst = (output.row(r) * inverse).template cast<T>();
      if (lse_ != nullptr)
        lse_[(b * g_.heads_q + h) * g_.seq_q + i0 + r] = static_cast<float>(softmax_.lse(r));
    }
  }

 private:
  /// logit += -slope * |p - t|, with the distance an exact integer until after the subtraction;
  /// keys outside a row's allowed range get -inf.
  template <class Scores>
  void add_bias_and_mask(Scores& scores, index_t rows, index_t cols, index_t t0, Acc slope) const {
    const Acc minus_inf = -std::numeric_limits<Acc>::infinity();
    for (index_t r = 0; r < rows; ++r) {
      const KeyRange range = ranges_[r];
      const index_t p = positions_[r];
      for (index_t c = 0; c < cols; ++c) {
        const index_t t = t0 + c;
        if (t < range.begin || t >= range.end) {
          scores(r, c) = minus_inf;
        } else {
          const index_t distance =
              p >= g_.key_position(t) ? p - g_.key_position(t) : g_.key_position(t) - p;
          scores(r, c) -= slope * static_cast<Acc>(distance);
        }
      }
    }
  }

  const Geometry& g_;
  TensorView<const T> q_, k_, v_;
  TensorView<T> out_;
  float* lse_;
  Tile q_tile_, k_tile_, v_tile_, scores_, output_;
  OnlineSoftmax<Acc> softmax_;
  std::vector<index_t> positions_;
  std::vector<KeyRange> ranges_;
};

/// Runs the fused forward over all (batch, head, query block) tasks.
template <class T>
void forward(const Geometry& g, TensorView<const T> q, TensorView<const T> k, TensorView<const T> v,
             TensorView<T> out, float* lse, int num_threads) {
  const index_t query_blocks =
      (g.seq_q + kernel_traits::query_block - 1) / kernel_traits::query_block;
  parallel_tasks(g.batch * g.heads_q * query_blocks, num_threads,
                 [&] { return ForwardWorker<T>(g, q, k, v, out, lse); });
}

}  // namespace detail
}  // namespace alibi
