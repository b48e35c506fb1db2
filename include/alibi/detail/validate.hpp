#pragma once
// Checks at the public boundary. Everything a caller can get wrong is caught here, before any
// output is written, with a message naming the argument and the sizes seen; past this point the
// kernels trust their inputs.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "geometry.hpp"
#include "numeric.hpp"
#include "overflow.hpp"
#include "overlap.hpp"

namespace alibi {
namespace detail {

/// Offsets (and extents) are at most 2^59 in magnitude: positions then stay within 2^60, and a
/// position plus an unbounded window (2^62) minus an offset stays inside int64.
constexpr index_t max_position = index_t(1) << 59;
/// Views beyond this many elements (2^59) cannot exist in memory.
constexpr index_t max_elements = index_t(1) << 59;

inline std::string shape_string(const std::array<index_t, 4>& s) {
  return "[" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]) +
         ", " + std::to_string(s[3]) + "]";
}

[[noreturn]] inline void fail(const char* fn, const std::string& what) {
  throw std::invalid_argument(std::string(fn) + ": " + what);
}

/// Element offsets [lo, hi] that a non-empty view reaches from its data pointer. Fails when
/// they overflow or reach further than any memory (2^59 elements), so that byte addresses and
/// every sum of strides below stay inside int64.
template <class T>
std::array<index_t, 2> element_reach(const char* fn, const char* name, const TensorView<T>& view) {
  std::array<index_t, 2> reach{0, 0};
  for (int i = 0; i < 4; ++i) {
    if (view.shape[i] <= 1) continue;  // a dimension of one element never uses its stride
    index_t step = 0;
    index_t& end = view.strides[i] < 0 ? reach[0] : reach[1];
    if (mul_overflows(view.strides[i], view.shape[i] - 1, &step) ||
        add_overflows(end, step, &end) || end < -max_elements || end > max_elements)
      fail(fn, std::string(name) + " strides overflow with shape " + shape_string(view.shape) +
                   ", strides " + shape_string(view.strides));
  }
  return reach;
}

/// A view's extents are non-negative, heads and head_dim are at least 1, data is there, and its
/// strides stay inside memory.
template <class T>
void check_view(const char* fn, const char* name, const TensorView<T>& view) {
  for (int i = 0; i < 4; ++i)
    if (view.shape[i] < 0 || view.shape[i] > max_position)
      fail(fn, std::string(name) + " has an invalid extent: shape " + shape_string(view.shape));
  // More elements than any memory holds; also keeps every element and byte count inside int64.
  index_t elements = 1;
  for (int i = 0; i < 4; ++i)
    if (mul_overflows(elements, view.shape[i], &elements) || elements > max_elements)
      fail(fn, std::string(name) + " has more elements than memory can hold: shape " +
                   shape_string(view.shape));
  if (view.heads() < 1 || view.head_dim() < 1)
    fail(fn, std::string(name) + " needs at least one head and head_dim >= 1, shape " +
                 shape_string(view.shape));
  if (view.size() > 0 && view.data == nullptr)
    fail(fn, std::string(name) + " is null but has shape " + shape_string(view.shape));
  // Strides of one-element dimensions are never used to reach an element, but arithmetic on
  // them must not overflow either.
  // (element_reach bounds the others).
  for (int i = 0; i < 4; ++i)
    if (view.shape[i] <= 1 && (view.strides[i] < -max_elements || view.strides[i] > max_elements))
      fail(fn, std::string(name) + " strides overflow with shape " + shape_string(view.shape) +
                   ", strides " + shape_string(view.strides) + " (a stride beyond +-2^59)");
  if (view.size() > 0) element_reach(fn, name, view);
}

/// Byte addresses [lo, hi) that a view can touch; empty for an empty view.
struct ByteSpan {
  std::uintptr_t lo = 0, hi = 0;
  bool overlaps(const ByteSpan& o) const {
    return lo < hi && o.lo < o.hi && lo < o.hi && o.lo < hi;
  }
};

/// The bytes of a view that check_view accepted.
template <class T>
ByteSpan byte_span(const char* fn, const char* name, const TensorView<T>& view) {
  if (view.size() == 0) return {};
  const std::array<index_t, 2> reach = element_reach(fn, name, view);
  const auto base = reinterpret_cast<std::uintptr_t>(view.data);
  const auto size = static_cast<std::uintptr_t>(sizeof(T));
  return {base - static_cast<std::uintptr_t>(-reach[0]) * size,
          base + static_cast<std::uintptr_t>(reach[1] + 1) * size};
}

/// No two elements of an output view share an address (else threads would race and results
/// would be overwritten): exact, see overlap.hpp.
template <class T>
void check_distinct_elements(const char* fn, const char* name, const TensorView<T>& view) {
  if (view.size() == 0) return;
  if (has_duplicate_elements(lattice_of(view)))
    fail(fn, std::string(name) + " has overlapping elements: shape " + shape_string(view.shape) +
                 ", strides " + shape_string(view.strides));
}

/// Params that fit a call with this batch, query heads and key count.
inline void check_params(const char* fn, const Params& params, index_t batch, index_t heads,
                         index_t seq_k) {
  // batch x heads (slopes, lse rows) need not fit when a view is empty in another extent.
  index_t rows = 0;
  if (mul_overflows(batch, heads, &rows) || rows > max_elements)
    fail(fn, "batch " + std::to_string(batch) + " x " + std::to_string(heads) +
                 " query heads is more than memory can hold");
  const auto ns = static_cast<index_t>(params.slopes.size());
  if (ns == 0 && heads > std::numeric_limits<int>::max())
    fail(fn, "default slopes need at most 2^31 - 1 heads, got " + std::to_string(heads) +
                 "; pass params.slopes");
  if (ns != 0 && ns != heads && ns != batch * heads)
    fail(fn, "params.slopes has " + std::to_string(ns) + " values but there are " +
                 std::to_string(heads) + " query heads and batch " + std::to_string(batch) +
                 ", so it needs " + std::to_string(heads) +
                 (batch == 1 ? std::string() : " or " + std::to_string(batch * heads)) +
                 " (or none)");
  // Positions reach +-2^59, so distances 2^61: a slope within +-2^64 keeps every bias (and so
  // every lse) a finite float, 8x below its overflow; beyond it a row's lse would round to
  // -inf and read as a row with no keys.
  constexpr float max_slope = 18446744073709551616.0f;  // 2^64
  for (std::size_t i = 0; i < params.slopes.size(); ++i)
    if (!(std::abs(params.slopes[i]) <= max_slope))
      fail(fn, "params.slopes[" + std::to_string(i) + "] is not finite within +-2^64 (got " +
                   std::to_string(params.slopes[i]) + ")");
  if (!(params.scale >= 0.0f) || !std::isfinite(params.scale))
    fail(fn, "params.scale must be finite and >= 0 (0 means 1/sqrt(head_dim)), got " +
                 std::to_string(params.scale));
  if (params.window_left < -1 || params.window_right < -1)
    fail(fn, "params.window_left and window_right must be >= -1, got (" +
                 std::to_string(params.window_left) + ", " + std::to_string(params.window_right) +
                 ")");
  if (!(params.tail_tolerance >= 0.0f) || !std::isfinite(params.tail_tolerance))
    fail(fn, "params.tail_tolerance must be finite and >= 0, got " +
                 std::to_string(params.tail_tolerance));
  if (!params.sink_logits.empty() && static_cast<index_t>(params.sink_logits.size()) != heads)
    fail(fn, "params.sink_logits has " + std::to_string(params.sink_logits.size()) +
                 " values but there are " + std::to_string(heads) + " query heads, so it needs " +
                 std::to_string(heads) + " (or none)");
  for (std::size_t i = 0; i < params.sink_logits.size(); ++i)
    if (!std::isfinite(params.sink_logits[i]))
      fail(fn, "params.sink_logits[" + std::to_string(i) + "] is not finite");
  if (!(params.max_evicted_weight >= 0) || !std::isfinite(params.max_evicted_weight))
    fail(fn, "params.max_evicted_weight must be finite and >= 0 (0: no limit), got " +
                 std::to_string(params.max_evicted_weight));
  if (params.num_threads < 0)
    fail(fn, "params.num_threads must be >= 0, got " + std::to_string(params.num_threads));
  for (const auto* offset : {&params.query_offset, &params.key_offset})
    if (*offset && (**offset < -max_position || **offset > max_position))
      fail(fn, std::string(offset == &params.query_offset ? "params.query_offset"
                                                          : "params.key_offset") +
                   " is outside +-2^59: " + std::to_string(**offset));
  if (!params.seqlens_k.empty()) {
    if (static_cast<index_t>(params.seqlens_k.size()) != batch)
      fail(fn, "params.seqlens_k has " + std::to_string(params.seqlens_k.size()) +
                   " values but the batch is " + std::to_string(batch));
    for (std::size_t b = 0; b < params.seqlens_k.size(); ++b)
      if (params.seqlens_k[b] < 0 || params.seqlens_k[b] > seq_k)
        fail(fn, "params.seqlens_k[" + std::to_string(b) +
                     "] = " + std::to_string(params.seqlens_k[b]) + " is outside [0, " +
                     std::to_string(seq_k) + "], the number of keys");
  }
}

/// params.seqlens_q fits a call with this batch and query count.
inline void check_seqlens_q(const char* fn, const Params& params, index_t batch, index_t seq_q) {
  if (params.seqlens_q.empty()) return;
  if (static_cast<index_t>(params.seqlens_q.size()) != batch)
    fail(fn, "params.seqlens_q has " + std::to_string(params.seqlens_q.size()) +
                 " values but the batch is " + std::to_string(batch));
  for (std::size_t b = 0; b < params.seqlens_q.size(); ++b)
    if (params.seqlens_q[b] < 0 || params.seqlens_q[b] > seq_q)
      fail(fn, "params.seqlens_q[" + std::to_string(b) + "] = " +
                   std::to_string(params.seqlens_q[b]) + " is outside [0, " +
                   std::to_string(seq_q) + "], the number of queries");
}

/// The shapes and params of an attention call (out is only looked at for its shape), resolved
/// into its geometry.
template <class T, class Out>
Geometry forward_geometry(const char* fn, const TensorView<const T>& q,
                          const TensorView<const T>& k, const TensorView<const T>& v,
                          const TensorView<Out>& out, const Params& params) {
  check_view(fn, "q", q);
  check_view(fn, "k", k);
  check_view(fn, "v", v);
  check_view(fn, "out", out);
  const std::string qs = shape_string(q.shape), ks = shape_string(k.shape),
                    vs = shape_string(v.shape), os = shape_string(out.shape);
  if (k.head_dim() != q.head_dim())
    fail(fn, "k has head_dim " + std::to_string(k.head_dim()) + " but q has " +
                 std::to_string(q.head_dim()) + " (q " + qs + ", k " + ks + ")");
  if (k.batch() != q.batch())
    fail(fn, "k has batch " + std::to_string(k.batch()) + " but q has " +
                 std::to_string(q.batch()) + " (q " + qs + ", k " + ks + ")");
  if (v.batch() != k.batch() || v.seq() != k.seq() || v.heads() != k.heads())
    fail(fn, "v " + vs + " must match k " + ks + " in batch, seq and heads");
  if (q.heads() % k.heads() != 0)
    fail(fn, "k has " + std::to_string(k.heads()) + " kv heads but q's " +
                 std::to_string(q.heads()) + " heads are not a multiple of it");
  if (out.batch() != q.batch() || out.seq() != q.seq() || out.heads() != q.heads() ||
      out.head_dim() != v.head_dim())
    fail(fn, "out has shape " + os + " but q " + qs + " and v " + vs + " need [" +
                 std::to_string(q.batch()) + ", " + std::to_string(q.seq()) + ", " +
                 std::to_string(q.heads()) + ", " + std::to_string(v.head_dim()) + "]");

  check_params(fn, params, q.batch(), q.heads(), k.seq());
  check_seqlens_q(fn, params, q.batch(), q.seq());
  Geometry g(q.batch(), q.seq(), k.seq(), q.heads(), k.heads(), q.head_dim(), v.head_dim(), params);
  // The default tolerance is the round-off of the type the call accumulates in.
  if (std::is_same<accum_t<T>, double>::value && params.tail_tolerance == Params::round_off)
    g.tail_tolerance = 0x1p-53f;
  return g;
}

/// Validates a forward call and resolves its geometry.
template <class T>
Geometry validate_forward(const char* fn, const TensorView<const T>& q,
                          const TensorView<const T>& k, const TensorView<const T>& v,
                          const TensorView<T>& out, const Params& params, const float* lse) {
  Geometry g = forward_geometry(fn, q, k, v, out, params);
  const index_t heads = q.heads(), batch = q.batch();
  const std::string os = shape_string(out.shape);
  check_distinct_elements(fn, "out", out);
  // Element by element (overlap.hpp): out may interleave with the inputs in one buffer.
  const ByteLattice out_elements = lattice_of(out);
  const ByteLattice inputs[] = {lattice_of(q), lattice_of(k), lattice_of(v)};
  const char* names[] = {"q", "k", "v"};
  for (int i = 0; i < 3; ++i)
    if (share_bytes(out_elements, inputs[i]))
      fail(fn, std::string("out ") + os + " overlaps " + names[i] + " in memory");
  if (lse != nullptr) {
    const ByteLattice lse_elements =
        lattice_of_array(lse, batch * heads * q.seq(), index_t(sizeof(float)));
    if (share_bytes(lse_elements, out_elements))
      fail(fn, "lse [" + std::to_string(batch) + ", " + std::to_string(heads) + ", " +
                   std::to_string(q.seq()) + "] overlaps out in memory");
    for (int i = 0; i < 3; ++i)
      if (share_bytes(lse_elements, inputs[i]))
        fail(fn, std::string("lse overlaps ") + names[i] + " in memory");
  }
  return g;
}

}  // namespace detail
}  // namespace alibi
