#pragma once
// Tile and micro-tile sizes of the fused kernels, in one place so that tests can straddle them.

#include <numeric>

#include <Eigen/Core>

#include "../tensor_view.hpp"

namespace alibi {
namespace detail {

template <class Acc>
struct kernel_traits {
  /// The widest SIMD vector Eigen uses for Acc in this build (AVX-512: 16 floats, AVX2: 8,
  /// SSE/NEON: 4; a plain scalar when Eigen does not vectorise).
  using Packet = typename Eigen::internal::packet_traits<Acc>::type;
  static constexpr int width = Eigen::internal::packet_traits<Acc>::size;
  /// A micro-tile is micro_rows rows by micro_packets packets of accumulators held in vector
  /// registers: 8 x 2 with 32 registers (AVX-512, NEON), 4 x 3 with 16 (AVX2, SSE), leaving
  /// room for the operands. Measured in L1: AVX-512 8 x 2 reaches the FMA peak where 4 x 4 stops
  /// near 80% of it; AVX2 4 x 3 reaches 90% where 4 x 2 stops at 80%.
  static constexpr bool many_registers = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS >= 32;
  static constexpr int micro_rows = many_registers ? 8 : 4;
  static constexpr int micro_packets = many_registers ? 2 : 3;
  /// Keys per tile of the online-softmax walk. Longer tiles amortise the per-tile softmax work
  /// and the reloading of the output accumulators; 256 keeps a tile's scores, values and output
  /// (about 0.5 MB at head_dim 128) inside a 1 MB L2.
  static constexpr index_t key_block = 256;
  /// Query rows of one task (query heads of a kv group times positions): about 128, a whole
  /// number of micro-tiles in both products and of packets. Scores are kept transposed, keys by
  /// query rows, so the softmax runs down packets of query rows.
  static constexpr index_t row_unit = std::lcm(std::lcm(micro_packets * width, micro_rows), width);
  static constexpr index_t query_rows = 128 / row_unit * row_unit;

  /// A row stride for tiles of n elements per row (n whole packets): n, or a cache line more
  /// when n is an even number of lines. Products read these tiles down their columns, a row at a
  /// step; at a power-of-two stride every row falls into the same few sets of L1 and evicts the
  /// rows before it, at an odd number of lines the rows spread over all of them.
  static constexpr index_t line = 64 / index_t(sizeof(Acc)) > width ? 64 / index_t(sizeof(Acc))
                                                                    : index_t(width);
  static constexpr index_t unaliased_stride(index_t n) {
    return n % line == 0 && (n / line) % 2 == 0 ? n + line : n;
  }

  static_assert(query_rows % (micro_packets * width) == 0 && query_rows % micro_rows == 0 &&
                    key_block % micro_rows == 0,
                "tiles must be whole numbers of micro-tiles");
};

}  // namespace detail
}  // namespace alibi
