#pragma once
// Tile and micro-tile sizes of the fused kernels, in one place so that tests can straddle them.

#include <Eigen/Core>

#include "../tensor_view.hpp"

namespace alibi {
namespace detail {

template <class Acc>
struct kernel_traits {
  /// The widest SIMD vector Eigen uses for Acc in this build (AVX-512: 16 floats, AVX2: 8,
  /// SSE/NEON: 4; a plain scalar when Eigen does not vectorise).
  using Packet = typename Eigen::internal::packet_traits<Acc>::type;
  static constexpr int width = Eigen::internal::unpacket_traits<Packet>::size;
  /// A micro-tile is micro_rows rows by micro_packets packets of accumulators held in registers:
  /// 6 x 4 with 32 vector registers (AVX-512, NEON), 6 x 2 with 16 (AVX2), leaving room for the
  /// operands.
  static constexpr int micro_rows = 6;
  static constexpr int micro_packets = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS >= 32 ? 4 : 2;
  /// Keys per tile of the online-softmax walk: the packed key and value tiles and the scores of
  /// one task stay in L1/L2.
  static constexpr index_t key_block = 64;
  /// Query rows of one task (query heads of a kv group times positions), a multiple of the
  /// micro-tile rows.
  static constexpr index_t query_rows = 10 * micro_rows;

  static_assert(key_block % (micro_packets * width) == 0,
                "a key tile must be a whole number of micro-tile columns");
};

}  // namespace detail
}  // namespace alibi
