#pragma once
// Strided [batch, seq, heads, head_dim] ("BSHD") views over memory the caller owns.

#include <array>
#include <cstdint>
#include <type_traits>

#include <unsupported/Eigen/CXX11/Tensor>

namespace alibi {

/// Sizes, positions and strides: 64-bit so that distances are exact at any length.
using index_t = std::int64_t;

/// A non-owning view of a BSHD tensor: element (b, s, h, d) sits at
/// `data[b * strides[0] + s * strides[1] + h * strides[2] + d * strides[3]]`.
/// Strides are in elements, so a packed QKV buffer or a KV cache is read in place. `T` may be
/// const; a `TensorView<T>` converts implicitly to a `TensorView<const T>`.
template <class T>
struct TensorView {
  T* data = nullptr;
  std::array<index_t, 4> shape{};    ///< batch, seq, heads, head_dim
  std::array<index_t, 4> strides{};  ///< in elements

  index_t batch() const { return shape[0]; }
  index_t seq() const { return shape[1]; }
  index_t heads() const { return shape[2]; }
  index_t head_dim() const { return shape[3]; }
  /// Number of elements; 0 when any extent is 0.
  index_t size() const { return shape[0] * shape[1] * shape[2] * shape[3]; }

  /// Pointer to element (b, s, h, 0), the start of one head vector.
  T* row(index_t b, index_t s, index_t h) const {
    return data + b * strides[0] + s * strides[1] + h * strides[2];
  }
  T& operator()(index_t b, index_t s, index_t h, index_t d) const {
    return row(b, s, h)[d * strides[3]];
  }

  template <class U,
            class = std::enable_if_t<std::is_same<const U, T>::value && !std::is_same<U, T>::value>>
  TensorView(const TensorView<U>& other)  // NOLINT: implicit, like T* -> const T*
      : data(other.data), shape(other.shape), strides(other.strides) {}
  TensorView() = default;
  TensorView(T* data_, std::array<index_t, 4> shape_, std::array<index_t, 4> strides_)
      : data(data_), shape(shape_), strides(strides_) {}
};

/// Contiguous BSHD view: `make_view(ptr, B, S, H, D)` over `B * S * H * D` elements.
template <class T>
TensorView<T> make_view(T* data, index_t batch, index_t seq, index_t heads, index_t head_dim) {
  return {
      data, {batch, seq, heads, head_dim}, {seq * heads * head_dim, heads * head_dim, head_dim, 1}};
}

/// Strided view with explicit strides in elements. For a packed QKV buffer laid out
/// `[B, S, 3, H, D]`, the query view is
/// `make_view(buf, {B, S, H, D}, {S * 3 * H * D, 3 * H * D, D, 1})`, keys start at `buf + H * D`
/// and values at `buf + 2 * H * D` with the same strides.
template <class T>
TensorView<T> make_view(T* data, std::array<index_t, 4> shape, std::array<index_t, 4> strides) {
  return {data, shape, strides};
}

/// View of a row-major rank-4 Eigen tensor (dimensions in BSHD order).
template <class T>
TensorView<T> make_view(Eigen::Tensor<T, 4, Eigen::RowMajor>& t) {
  return make_view(t.data(), t.dimension(0), t.dimension(1), t.dimension(2), t.dimension(3));
}
template <class T>
TensorView<const T> make_view(const Eigen::Tensor<T, 4, Eigen::RowMajor>& t) {
  return make_view(t.data(), t.dimension(0), t.dimension(1), t.dimension(2), t.dimension(3));
}

/// View of a row-major rank-4 Eigen::TensorMap (T may be const).
template <class T, int Options>
TensorView<T> make_view(const Eigen::TensorMap<Eigen::Tensor<T, 4, Eigen::RowMajor>, Options>& t) {
  return make_view(t.data(), t.dimension(0), t.dimension(1), t.dimension(2), t.dimension(3));
}
template <class T, int Options>
TensorView<const T> make_view(
    const Eigen::TensorMap<const Eigen::Tensor<T, 4, Eigen::RowMajor>, Options>& t) {
  return make_view(t.data(), t.dimension(0), t.dimension(1), t.dimension(2), t.dimension(3));
}

}  // namespace alibi
