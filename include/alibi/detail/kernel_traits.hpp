#pragma once
// Tile sizes of the fused kernels, in one place so that tests can straddle them.

#include "../tensor_view.hpp"

namespace alibi {
namespace detail {

struct kernel_traits {
  /// Queries per tile: one task of the dispatcher, sharing each key tile while it is in cache.
  static constexpr index_t query_block = 64;
  /// Keys per tile of the online softmax walk.
  static constexpr index_t key_block = 128;
};

}  // namespace detail
}  // namespace alibi
