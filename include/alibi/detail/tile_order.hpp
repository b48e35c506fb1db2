#pragma once
// The order in which a task visits its key tiles. Without the tail skip: forward through memory,
// as the prefetchers like it. With it: from the nearest to the farthest (the keys at and before
// the block's last position going left, those after it going right, whichever side is nearer
// next), so that the walk may stop once the unvisited keys, [span.begin, left) and
// [right, span.end), provably carry nothing (tail_bound.hpp).

#include <algorithm>

#include "geometry.hpp"

namespace alibi {
namespace detail {

class TileOrder {
 public:
  /// Keys `span` in tiles of `tile` keys, for rows whose positions are the keys `first_row` to
  /// `last_row` (key indices, not positions).
  TileOrder(KeyRange span, index_t first_row, index_t last_row, bool nearest_first, index_t tile)
      : span_(span), first_row_(first_row), last_row_(last_row), tile_(tile) {
    const index_t anchor = std::min(std::max(last_row + 1, span.begin), span.end);
    left_ = right_ = nearest_first ? anchor : span.begin;
  }

  /// The next tile, or false when every key has been visited.
  bool next(KeyRange& tile) {
    if (left_ <= span_.begin && right_ >= span_.end) return false;
    if (left_ > span_.begin &&
        (right_ >= span_.end || first_row_ - (left_ - 1) <= right_ - last_row_)) {
      tile = {std::max(span_.begin, left_ - tile_), left_};
      left_ = tile.begin;
    } else {
      tile = {right_, std::min(tile_, span_.end - right_) + right_};
      right_ = tile.end;
    }
    return true;
  }

  /// The unvisited keys are [span.begin, left()) and [right(), span.end).
  index_t left() const { return left_; }
  index_t right() const { return right_; }

 private:
  KeyRange span_;
  index_t first_row_, last_row_, tile_, left_ = 0, right_ = 0;
};

}  // namespace detail
}  // namespace alibi
