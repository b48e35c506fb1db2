#pragma once
// Whether views share memory, element by element rather than by address range: the q, k and v
// slots of one packed [B, S, 3, H, D] buffer interleave (their ranges overlap) without sharing an
// element, and so do transposed or negative-stride views; they must pass, and views that do
// share an element must not.
//
// The elements of a view are the byte addresses base + sum_i s_i x_i with 0 <= x_i < n_i. Two
// views share a byte iff some integer point of a box satisfies one linear equation (up to the
// element sizes), which a depth-first search over the dimensions decides, largest stride first:
// for each coordinate only the values that leave the target within reach of the smaller strides
// remain. For the layouts users build (every stride beyond the reach of the smaller ones, as in
// any packed, interleaved, padded or transposed BSHD buffer) at most two values remain per
// dimension, so the search is exact and visits a few dozen nodes. Where strides are not nested
// the search may grow: past a budget of nodes, views of up to 2^20 elements are compared
// address by address (exact), and larger ones are reported as sharing (conservative).

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "../tensor_view.hpp"

namespace alibi {
namespace detail {

__extension__ typedef __int128 wide_t;  // sums of up to 8 byte offsets of 2^62

/// The byte addresses of a view's elements: base + sum strides[i] x_i, x_i < extents[i].
struct ByteLattice {
  std::uintptr_t base = 0;
  std::array<index_t, 4> extents{};
  std::array<index_t, 4> strides{};  // in bytes
  index_t element_bytes = 1;
  bool empty() const {
    return std::any_of(extents.begin(), extents.end(), [](index_t n) { return n == 0; });
  }
};

/// The lattice of a view that check_view accepted (strides bounded, so bytes fit in int64).
template <class T>
ByteLattice lattice_of(const TensorView<T>& view) {
  ByteLattice l;
  l.base = reinterpret_cast<std::uintptr_t>(view.data);
  l.extents = view.shape;
  for (int i = 0; i < 4; ++i)
    l.strides[i] = view.shape[i] <= 1 ? 0 : view.strides[i] * index_t(sizeof(T));
  l.element_bytes = index_t(sizeof(T));
  return l;
}

/// `count` contiguous elements of `element_bytes` from `data` (an lse buffer).
inline ByteLattice lattice_of_array(const void* data, index_t count, index_t element_bytes) {
  ByteLattice l;
  l.base = reinterpret_cast<std::uintptr_t>(data);
  l.extents = {1, 1, 1, count};
  l.strides = {0, 0, 0, element_bytes};
  l.element_bytes = element_bytes;
  return l;
}

/// One unknown of the search: coefficient c > 0, values in [lo, hi].
struct LatticeTerm {
  wide_t c, lo, hi;
};

class LatticeSearch {
 public:
  static constexpr int budget = 4096;  // nodes, before the search gives up (see the top)

  /// Adds sign * strides[i] * x_i, x_i in [0, n_i); terms of equal magnitude merge.
  void add(const ByteLattice& l, int sign) {
    for (int i = 0; i < 4; ++i) {
      if (l.extents[i] <= 1) continue;
      const wide_t s = wide_t(l.strides[i]) * sign, reach = wide_t(l.extents[i] - 1);
      if (s == 0) {
        zero_stride_ = true;
        continue;
      }
      const wide_t c = s < 0 ? -s : s, lo = s < 0 ? -reach : 0, hi = s < 0 ? 0 : reach;
      auto same = std::find_if(terms_.begin(), terms_.end(),
                               [&](const LatticeTerm& t) { return t.c == c; });
      if (same == terms_.end()) {
        terms_.push_back({c, lo, hi});
      } else {
        same->lo += lo;
        same->hi += hi;
        merged_ = true;
      }
    }
  }
  /// Adds strides[i] * z_i with z_i in (-n_i, n_i): the differences of two of l's coordinates.
  void add_differences(const ByteLattice& l) {
    for (int i = 0; i < 4; ++i) {
      if (l.extents[i] <= 1) continue;
      const wide_t c = l.strides[i] < 0 ? -wide_t(l.strides[i]) : wide_t(l.strides[i]);
      const wide_t reach = wide_t(l.extents[i] - 1);
      if (c == 0) {
        zero_stride_ = true;
        continue;
      }
      if (std::any_of(terms_.begin(), terms_.end(), [&](const LatticeTerm& t) { return t.c == c; }))
        merged_ = true;
      terms_.push_back({c, -reach, reach});
    }
  }
  bool zero_stride() const { return zero_stride_; }
  bool merged() const { return merged_; }

  /// 1: some point of the box has sum c v in [lo, hi] (and v != 0 when `nonzero`); 0: none;
  /// -1: the budget ran out first.
  int solve(wide_t lo, wide_t hi, bool nonzero) {
    std::sort(terms_.begin(), terms_.end(),
              [](const LatticeTerm& a, const LatticeTerm& b) { return a.c > b.c; });
    reach_lo_.assign(terms_.size() + 1, 0);
    reach_hi_.assign(terms_.size() + 1, 0);
    for (std::size_t j = terms_.size(); j-- > 0;) {
      reach_lo_[j] = reach_lo_[j + 1] + terms_[j].c * terms_[j].lo;
      reach_hi_[j] = reach_hi_[j + 1] + terms_[j].c * terms_[j].hi;
    }
    nodes_ = 0;
    return search(0, lo, hi, !nonzero);
  }

 private:
  static wide_t floor_div(wide_t a, wide_t b) {  // b > 0
    return a >= 0 ? a / b : -((-a + b - 1) / b);
  }
  static wide_t ceil_div(wide_t a, wide_t b) { return -floor_div(-a, b); }

  int search(std::size_t j, wide_t lo, wide_t hi, bool nonzero_seen) {
    if (++nodes_ > budget) return -1;
    if (j == terms_.size()) return lo <= 0 && 0 <= hi && nonzero_seen ? 1 : 0;
    const LatticeTerm& t = terms_[j];
    // v such that [lo, hi] - c v meets the reach [reach_lo, reach_hi] of the smaller terms.
    const wide_t first = std::max(t.lo, ceil_div(lo - reach_hi_[j + 1], t.c));
    const wide_t last = std::min(t.hi, floor_div(hi - reach_lo_[j + 1], t.c));
    for (wide_t v = first; v <= last; ++v) {
      const int found = search(j + 1, lo - t.c * v, hi - t.c * v, nonzero_seen || v != 0);
      if (found != 0) return found;
    }
    return 0;
  }

  std::vector<LatticeTerm> terms_;
  std::vector<wide_t> reach_lo_, reach_hi_;
  bool zero_stride_ = false, merged_ = false;
  int nodes_ = 0;
};

/// Every element's first byte, for the exact fallback.
inline std::vector<std::uintptr_t> element_addresses(const ByteLattice& l) {
  std::vector<std::uintptr_t> a;
  a.reserve(std::size_t(l.extents[0] * l.extents[1] * l.extents[2] * l.extents[3]));
  for (index_t i = 0; i < l.extents[0]; ++i)
    for (index_t j = 0; j < l.extents[1]; ++j)
      for (index_t k = 0; k < l.extents[2]; ++k)
        for (index_t m = 0; m < l.extents[3]; ++m)
          a.push_back(l.base + std::uintptr_t(i * l.strides[0] + j * l.strides[1] +
                                              k * l.strides[2] + m * l.strides[3]));
  std::sort(a.begin(), a.end());
  return a;
}

constexpr index_t exact_fallback_elements = index_t(1) << 20;

inline index_t element_count(const ByteLattice& l) {
  return l.extents[0] * l.extents[1] * l.extents[2] * l.extents[3];
}

/// Whether two views share a byte (see the top: exact, or true when undecidable cheaply).
inline bool share_bytes(const ByteLattice& a, const ByteLattice& b) {
  if (a.empty() || b.empty()) return false;
  LatticeSearch search;
  search.add(a, 1);
  search.add(b, -1);
  // a's element at A meets b's at B iff A - B in [-(size_a - 1), size_b - 1].
  const wide_t delta = wide_t(a.base) - wide_t(b.base);
  const int found = search.solve(-wide_t(a.element_bytes - 1) - delta,
                                 wide_t(b.element_bytes - 1) - delta, false);
  if (found >= 0) return found == 1;
  if (element_count(a) > exact_fallback_elements || element_count(b) > exact_fallback_elements)
    return true;
  const std::vector<std::uintptr_t> x = element_addresses(a), y = element_addresses(b);
  // Some a-element start in (B - size_a, B + size_b) for some b-element start B.
  for (std::uintptr_t start : y) {
    auto it = std::upper_bound(x.begin(), x.end(), start - std::uintptr_t(a.element_bytes));
    if (it != x.end() && *it < start + std::uintptr_t(b.element_bytes)) return true;
  }
  return false;
}

/// Whether two elements of one view share an address (exact as above; conservative only past
/// the budget for views of more than 2^20 elements).
inline bool has_duplicate_elements(const ByteLattice& l) {
  if (l.empty()) return false;
  LatticeSearch search;
  search.add_differences(l);
  if (search.zero_stride() || search.merged()) return true;  // two coordinates reach one address
  const int found = search.solve(0, 0, true);
  if (found >= 0) return found == 1;
  if (element_count(l) > exact_fallback_elements) return true;
  const std::vector<std::uintptr_t> x = element_addresses(l);
  return std::adjacent_find(x.begin(), x.end()) != x.end();
}

}  // namespace detail
}  // namespace alibi
