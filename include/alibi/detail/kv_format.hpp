#pragma once
// How the walks read stored key and value rows: a format turns `width` consecutive elements of a
// row into one packet of the accumulation type (in registers, where the walk needs them), and a
// whole row into Acc (for the prefill tiles, which pack keys and values into scratch).
// A format is a small value (it knows the row's length): `Storage` (what a row pointer points
// at), `Acc`, `row_bytes()`, `load<Packet>(row, d)` (elements [d, d + width), d a multiple of the
// width) and `to_acc(row, dst)` (the whole row). Formats a cache writes also have
// `store(src, row)`: a row of floats into the stored form (rounded or quantised).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include "../tensor_view.hpp"
#include "numeric.hpp"
#include "packet_convert.hpp"

namespace alibi {
namespace detail {

/// Rows of `dim` elements of T (float, double, Eigen::half, Eigen::bfloat16), contiguous in d.
/// Half and bfloat16 rows are converted to float packets in registers (packet_convert.hpp).
template <class T>
struct ElementFormat {
  using Storage = T;
  using Acc = accum_t<T>;
  using Packet = typename Eigen::internal::packet_traits<Acc>::type;
  /// Whether load() exists: the decode walk reads rows through it.
  static constexpr bool loads_packets =
      std::is_same<T, Acc>::value ||
      (std::is_same<Acc, float>::value &&
       (std::is_same<T, Eigen::half>::value || std::is_same<T, Eigen::bfloat16>::value));
  index_t dim;

  index_t row_bytes() const { return dim * index_t(sizeof(T)); }

  template <class Packet>
  Packet load(const T* row, index_t d) const {
    using namespace Eigen::internal;
    static_assert(loads_packets, "ElementFormat::load: rows of Acc, half or bfloat16 only");
    if constexpr (std::is_same<T, Acc>::value)
      return ploadu<Packet>(row + d);
    else
      return load_as_float<Packet>(row + d);
  }

  void to_acc(const T* row, Acc* dst) const {
    using namespace Eigen::internal;
    if constexpr (!std::is_same<T, Acc>::value && loads_packets) {
      // Eigen's array cast converts half and bfloat16 an element at a time.
      constexpr index_t width = packet_traits<Acc>::size;
      index_t d = 0;
      for (; d + width <= dim; d += width) pstoreu(dst + d, load_as_float<Packet>(row + d));
      for (; d < dim; ++d) dst[d] = Acc(row[d]);
    } else {
      Eigen::Map<Eigen::Array<Acc, 1, Eigen::Dynamic>>(dst, dim) =
          Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>(row, dim).template cast<Acc>();
    }
  }

  /// A row of floats, rounded to T (to nearest even).
  void store(const float* src, T* row) const {
    for (index_t d = 0; d < dim; ++d) row[d] = T(src[d]);
  }
};

/// Rows of `dim` int8 values in blocks of 32 (the last may be shorter), each block with a float
/// scale, symmetric (q8_0's layout): a row is its dim bytes, then its scales. Element d is
/// q[d] * scale[d / 32]. 1.125 bytes per element when dim is a multiple of 32.
struct Int8Format {
  using Storage = std::int8_t;
  using Acc = float;
  static constexpr bool loads_packets = true;
  static constexpr index_t block = 32;
  index_t dim;

  index_t blocks() const { return (dim + block - 1) / block; }
  index_t row_bytes() const { return dim + blocks() * index_t(sizeof(float)); }

  float scale(const std::int8_t* row, index_t d) const {
    float s;  // the scales follow the values unaligned when dim is not a multiple of 4
    std::memcpy(&s, row + dim + d / block * index_t(sizeof(float)), sizeof(float));
    return s;
  }

  /// A packet lies inside one block: the width divides 32.
  template <class Packet>
  Packet load(const std::int8_t* row, index_t d) const {
    using namespace Eigen::internal;
    static_assert(block % unpacket_traits<Packet>::size == 0, "a packet within one block");
    return pmul(load_as_float<Packet>(row + d), pset1<Packet>(scale(row, d)));
  }

  void to_acc(const std::int8_t* row, float* dst) const {
    for (index_t b0 = 0; b0 < dim; b0 += block) {
      const float s = scale(row, b0);
      const index_t end = std::min(dim, b0 + block);
      for (index_t d = b0; d < end; ++d) dst[d] = float(row[d]) * s;
    }
  }

  /// Each block scaled by its largest magnitude / 127 and rounded to nearest: every element is
  /// then within half a step (scale / 2) of its float. A block of zeros has scale 0; NaN or
  /// infinity in a block makes its scale non-finite, so the block reads back as NaN, never as a
  /// silently finite value.
  void store(const float* src, std::int8_t* row) const {
    for (index_t b0 = 0; b0 < dim; b0 += block) {
      const index_t end = std::min(dim, b0 + block);
      float largest = 0;
      bool finite = true;
      for (index_t d = b0; d < end; ++d) {
        finite = finite && std::isfinite(src[d]);
        largest = std::max(largest, std::fabs(src[d]));
      }
      const float s = finite ? largest / 127.0f : std::numeric_limits<float>::quiet_NaN();
      for (index_t d = b0; d < end; ++d) {
        const float x = finite && s > 0 ? std::nearbyint(src[d] / s) : 0.0f;
        row[d] = std::int8_t(std::max(-127.0f, std::min(127.0f, x)));
      }
      std::memcpy(row + dim + b0 / block * index_t(sizeof(float)), &s, sizeof(float));
    }
  }
};

}  // namespace detail
}  // namespace alibi
