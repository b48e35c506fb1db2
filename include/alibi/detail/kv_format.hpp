#pragma once
// How the walks read stored key and value rows: a format turns `width` consecutive elements of a
// row into one packet of the accumulation type (in registers, where the walk needs them), and a
// whole row into Acc (for the prefill tiles, which pack keys and values into scratch).
// A format is a small value (it knows the row's length): `Storage` (what a row pointer points
// at), `Acc`, `row_bytes()`, `load<Packet>(row, d)` (elements [d, d + width), d a multiple of the
// width) and `to_acc(row, dst)` (the whole row).

#include <type_traits>

#include <Eigen/Core>

#include "../tensor_view.hpp"
#include "numeric.hpp"

namespace alibi {
namespace detail {

/// Rows of `dim` elements of T (float, double, Eigen::half, Eigen::bfloat16), contiguous in d.
template <class T>
struct ElementFormat {
  using Storage = T;
  using Acc = accum_t<T>;
  /// Whether load() exists: the decode walk reads rows through it.
  static constexpr bool loads_packets = std::is_same<T, Acc>::value;
  index_t dim;

  index_t row_bytes() const { return dim * index_t(sizeof(T)); }

  template <class Packet>
  Packet load(const T* row, index_t d) const {
    using namespace Eigen::internal;
    static_assert(loads_packets, "ElementFormat::load: rows of Acc only");
    return ploadu<Packet>(row + d);
  }

  void to_acc(const T* row, Acc* dst) const {
    Eigen::Map<Eigen::Array<Acc, 1, Eigen::Dynamic>>(dst, dim) =
        Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>(row, dim).template cast<Acc>();
  }
};

}  // namespace detail
}  // namespace alibi
