#pragma once
// Where the walks read keys and values: a source gives, per (batch row, kv head), accessors to
// the rows of its keys and values in one storage format (kv_format.hpp), the first key it holds,
// and upper bounds of key norms for the tail skip. The walks know nothing else of the storage, so
// a strided view (here) and a sequence's pages (paged_source.hpp) plug in at this one place.
//
// A source: `Format`, `Rows` (row t of one (b, kv) as `rows(t)`, and `rows.run(t0, n, ...)`:
// whether keys [t0, t0 + n) are rows one stride apart), `keys(b, kv)`, `values(b, kv)`,
// `key_format()`, `value_format()`,
// `first_key(b, kv)`, `contiguous()` (rows contiguous in d, as the decode walk and the in-place
// tiles need), `key_to_acc` / `value_to_acc` (one row into Acc, any strides), and the norm bounds
// `has_norms()`, `norm_before(b, kv, end)`, `norm_from(b, kv, begin)` (tail_bound.hpp).

#include "../tensor_view.hpp"
#include "kv_format.hpp"
#include "tail_bound.hpp"

namespace alibi {
namespace detail {

/// Rows of one (b, kv) a fixed stride apart: row t at data + t * stride.
template <class S>
struct StridedRows {
  const S* data;
  index_t stride;

  const S* operator()(index_t t) const { return data + t * stride; }
  /// Keys [t0, t0 + n) are always one run here.
  bool run(index_t t0, index_t /*n*/, const S*& first, index_t& row_stride) const {
    first = data + t0 * stride;
    row_stride = stride;
    return true;
  }
};

/// Copies n elements of a head vector (stride in elements) into Acc: where strides end.
template <class T, class Acc>
void load_vector(const T* src, index_t stride, index_t n, Acc* dst) {
  if (stride == 1) {
    ElementFormat<T>{n}.to_acc(src, dst);
  } else {
    for (index_t d = 0; d < n; ++d) dst[d] = Acc(src[d * stride]);
  }
}

/// Keys and values of strided BSHD views, with the norm bounds the caller measured or keeps.
template <class T>
class ViewSource {
 public:
  using Format = ElementFormat<T>;
  using Storage = T;
  using Acc = accum_t<T>;
  using Rows = StridedRows<T>;

  ViewSource(TensorView<const T> k, TensorView<const T> v, const KeyNormBounds* norms = nullptr)
      : k_(k), v_(v), norms_(norms) {}

  Rows keys(index_t b, index_t kv) const { return {k_.row(b, 0, kv), k_.strides[1]}; }
  Rows values(index_t b, index_t kv) const { return {v_.row(b, 0, kv), v_.strides[1]}; }
  Format key_format() const { return {k_.head_dim()}; }
  Format value_format() const { return {v_.head_dim()}; }
  index_t first_key(index_t, index_t) const { return 0; }
  bool contiguous() const { return k_.strides[3] == 1 && v_.strides[3] == 1; }

  void key_to_acc(index_t b, index_t kv, index_t t, Acc* dst) const {
    load_vector(k_.row(b, t, kv), k_.strides[3], k_.head_dim(), dst);
  }
  void value_to_acc(index_t b, index_t kv, index_t t, Acc* dst) const {
    load_vector(v_.row(b, t, kv), v_.strides[3], v_.head_dim(), dst);
  }

  bool has_norms() const { return norms_ != nullptr; }
  void set_norms(const KeyNormBounds* norms) { norms_ = norms; }
  float norm_before(index_t b, index_t kv, index_t end) const { return norms_->before(b, kv, end); }
  float norm_from(index_t b, index_t kv, index_t begin) const { return norms_->from(b, kv, begin); }

  const TensorView<const T>& k() const { return k_; }
  const TensorView<const T>& v() const { return v_; }

 private:
  TensorView<const T> k_, v_;
  const KeyNormBounds* norms_;
};

}  // namespace detail
}  // namespace alibi
