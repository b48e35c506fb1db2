#pragma once
// The running max and sum of a block of softmax rows, updated one key tile at a time
// (FlashAttention's online softmax). Rows whose max is still -inf (no allowed key so far) are
// guarded so that -inf - -inf never makes a NaN; NaN in the data still reaches the output.

#include <cmath>
#include <limits>

#include <Eigen/Core>

namespace alibi {
namespace detail {

template <class Acc>
struct OnlineSoftmax {
  using Tile = Eigen::Matrix<Acc, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Array<Acc, Eigen::Dynamic, 1> max, sum;

  void reset(Eigen::Index rows) {
    max.setConstant(rows, -std::numeric_limits<Acc>::infinity());
    sum.setZero(rows);
  }

  /// Turns the logits of one key tile into weights exp(logit - running max) in place, and scales
  /// the rows of `accumulator` by the change of the running max.
  template <class Scores, class Accumulator>
  void update(Scores& scores, Accumulator& accumulator) {
    for (Eigen::Index r = 0; r < scores.rows(); ++r) {
      const Acc tile_max = scores.row(r).maxCoeff();
      const Acc new_max = tile_max > max[r] ? tile_max : max[r];
      const Acc shift = new_max == -std::numeric_limits<Acc>::infinity() ? Acc(0) : new_max;
      // Masked logits are -inf; vectorised exp clamps its argument and would give them a tiny
      // nonzero weight (enough to turn a masked NaN or inf value into a NaN output).
      scores.row(r) = (scores.row(r).array() == -std::numeric_limits<Acc>::infinity())
                          .select(Acc(0), (scores.row(r).array() - shift).exp())
                          .matrix();
      const Acc rescale = std::exp(max[r] - shift);
      sum[r] = sum[r] * rescale + scores.row(r).sum();
      accumulator.row(r) *= rescale;
      max[r] = new_max;
    }
  }

  /// Natural log of the row's sum of exp(logit); -inf for a row with no allowed key.
  Acc lse(Eigen::Index r) const {
    return sum[r] == Acc(0) ? -std::numeric_limits<Acc>::infinity() : max[r] + std::log(sum[r]);
  }
};

}  // namespace detail
}  // namespace alibi
