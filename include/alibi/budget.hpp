#pragma once
// What a memory-budgeted cache reports when eviction may have changed a result by more than the
// caller allows (Params::max_evicted_weight).

#include <cstdio>
#include <stdexcept>
#include <string>

#include "tensor_view.hpp"

namespace alibi {

/// Thrown by attention over a memory-budgeted cache, before anything is written, when some query
/// row's evicted weight bound (AttentionStats::evicted_weight_bound) exceeds
/// Params::max_evicted_weight: the keys the cache evicted might have moved that row's output by
/// up to about 2 x bound() x max |v|. An engine can then re-prefill or raise the budget.
class BudgetExceeded : public std::runtime_error {
 public:
  BudgetExceeded(const std::string& where, index_t sequence, index_t head, double bound,
                 double limit)
      : std::runtime_error(where + ": sequence " + std::to_string(sequence) + ", query head " +
                           std::to_string(head) + ": evicted weight bound " + format(bound) +
                           " exceeds params.max_evicted_weight " + format(limit)),
        sequence_(sequence),
        head_(head),
        bound_(bound) {}

  /// The sequence (its id in the cache) and query head of the row with the largest bound.
  index_t sequence() const { return sequence_; }
  index_t head() const { return head_; }
  /// That row's bound on the evicted keys' weight relative to its sum.
  double bound() const { return bound_; }

 private:
  static std::string format(double x) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3g", x);
    return text;
  }
  index_t sequence_, head_;
  double bound_;
};

}  // namespace alibi
