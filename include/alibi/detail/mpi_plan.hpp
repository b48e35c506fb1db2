#pragma once
// Which keys of one rank another rank needs, decided without MPI: the layout of the sequence over
// the ranks (segments), what each receiving segment's rows allow (the mask's hull), and the tail
// cut that leaves out keys ALiBi makes negligible.
//
// The cut. A receiving row at position p with scaled query norm |q| and a lower bound l of its
// lse gives the keys at positions < c (all on its left) a total weight of at most
//     sum over d >= p - c + 1 of exp(|q| K - m d - l) = exp(|q| K - m (p - c + 1) - l) / (1 - e^-m)
// relative to its sum (K the largest norm among those keys: Cauchy-Schwarz). Over a segment's
// rows this is at most exp(Qmax K - Lmin + m (c - 1)) / (1 - e^-m) with Qmax = max |q| and
// Lmin = min (m p + l); keys at positions >= c on the right likewise with Rmax = max (m p - l):
// exp(Qmax K + Rmax - m c) / (1 - e^-m). A sender cuts its segment at the block boundary nearest
// the receiver for which the bound holds, with K also covering every key farther out in the
// whole sequence (each segment's largest norm is shared). Because each sender's K covers all
// farther keys, the keys left out by all senders together lie beyond the nearest cut, and that
// cut's bound covers them all: the total left out per side is at most the side's tolerance.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "geometry.hpp"
#include "tail_bound.hpp"

namespace alibi {
namespace detail {
namespace mpi {

/// How the sequence is laid out over the ranks.
enum class LayoutKind { contiguous, zigzag };

/// A run of consecutive positions held by one rank: its tokens [local_begin, local_begin +
/// length) sit at global positions [global_begin, global_begin + length).
struct Segment {
  int rank = 0;
  index_t local_begin = 0, global_begin = 0, length = 0;
  index_t global_end() const { return global_begin + length; }
  bool empty() const { return length <= 0; }
};

/// Segments per rank (at most two each), in the rank's local order, from every rank's length.
/// Contiguous: rank r holds the r-th slice. Zigzag: each rank's first half is chunk r and its
/// second half chunk 2P - 1 - r of the sequence (halves in rank order, then in reverse), which
/// gives every rank a near and a far part of a causal sequence.
inline std::vector<std::vector<Segment>> layout_segments(const std::vector<index_t>& lengths,
                                                         LayoutKind kind, index_t base = 0) {
  const int ranks = int(lengths.size());
  std::vector<std::vector<Segment>> segs(static_cast<std::size_t>(ranks));
  index_t position = base;
  if (kind == LayoutKind::contiguous) {
    for (int r = 0; r < ranks; ++r) {
      segs[std::size_t(r)].push_back({r, 0, position, lengths[std::size_t(r)]});
      position += lengths[std::size_t(r)];
    }
    return segs;
  }
  for (int r = 0; r < ranks; ++r) {
    const index_t first = lengths[std::size_t(r)] / 2;
    segs[std::size_t(r)].push_back({r, 0, position, first});
    position += first;
  }
  for (int r = ranks; r-- > 0;) {
    const index_t first = lengths[std::size_t(r)] / 2;
    segs[std::size_t(r)].push_back({r, first, position, lengths[std::size_t(r)] - first});
    position += lengths[std::size_t(r)] - first;
  }
  return segs;
}

/// Rows of a receiving segment per (batch, query head), for the tail cut: Qmax (largest scaled
/// query norm), Lmin = min (m p + l) and Rmax = max (m p - l), l a lower bound of the row's lse.
/// NaN anywhere turns the summary into NaN, and NaN never cuts.
struct RowSummary {
  double q_max = 0, left_min = HUGE_VAL, right_max = -HUGE_VAL;
};

inline double nan_min(double a, double b) { return std::isnan(a) || b < a ? b : a; }
inline double nan_max_d(double a, double b) { return std::isnan(a) || b > a ? b : a; }

/// The summary of rows [begin, begin + count) of (b, h) of q at positions from `position`, with
/// lse lower bounds at `lse` (stride 1 over rows), positions relative to the sequence's start.
template <class T>
RowSummary summarise_rows(const Geometry& g, const TensorView<const T>& q, index_t b, index_t h,
                          index_t begin, index_t count, index_t position, const float* lse) {
  RowSummary s;
  const double m = g.slope(b, h);
  for (index_t i = 0; i < count; ++i) {
    double squares = 0;
    const T* row = q.row(b, begin + i, h);
    for (index_t d = 0; d < g.head_dim; ++d) {
      const double x = double(row[d * q.strides[3]]) * double(g.scale);
      squares += x * x;
    }
    const double norm = std::sqrt(squares), l = double(lse[i]), p = double(position + i);
    if (!std::isfinite(norm) || !std::isfinite(l)) return {NAN, NAN, NAN};
    s.q_max = std::max(s.q_max, norm);
    s.left_min = nan_min(s.left_min, m * p + l);
    s.right_max = nan_max_d(s.right_max, m * p - l);
  }
  return s;
}

/// The mask's hull for a receiving segment against a sending one: the sender's keys (indices
/// within the segment) that some row of the receiver may attend.
inline KeyRange mask_hull(const Geometry& g, const Segment& receiver, const Segment& sender) {
  if (receiver.empty() || sender.empty()) return {};
  const index_t first = receiver.global_begin, last = receiver.global_end() - 1;
  const index_t low = first - g.window_left;
  const index_t high = g.causal ? std::min(last, last + g.window_right) : last + g.window_right;
  KeyRange r{std::max<index_t>(0, low - sender.global_begin),
             std::min(sender.length, high - sender.global_begin + 1)};
  if (r.empty()) return {};
  return r;
}

/// Whether the bound of the cut holds for one query head: `exponent_free` is the exponent
/// without the key norm term (Lmin or Rmax and the distance folded in).
inline bool cut_holds(const RowSummary& s, double key_norm, double slope, double exponent_free,
                      double tolerance) {
  if (!(slope > 0) || !(tolerance > 0)) return false;
  // Norms carry float round-off; a relative margin keeps the bound an upper bound.
  const double exponent = s.q_max * key_norm * (1 + 1e-5) + exponent_free;
  const double bound = std::exp(exponent) / -std::expm1(-slope);
  return bound <= tolerance;  // NaN: false
}

/// What a sending segment must ship to a receiving one, per (b, kv head): the mask's hull, cut by
/// the tail bound at `tolerance` (per side) when the segments do not overlap. `summaries` are the
/// receiver's, [b * Hq + h]; `norms` the sender's key-norm bounds (indices local to its rank);
/// `farther_norm` the largest key norm of the whole sequence beyond the sender's segment (on the
/// side away from the receiver). Cuts fall on the 64-key blocks of the norm bounds.
inline KeyRange needed_keys(const Geometry& g, const Segment& receiver, const Segment& sender,
                            index_t b, index_t kv, const RowSummary* summaries,
                            const KeyNormBounds* norms, float farther_norm, double tolerance) {
  KeyRange r = mask_hull(g, receiver, sender);
  if (r.empty() || norms == nullptr || !(tolerance > 0)) return r;
  const index_t group = g.heads_q / g.heads_kv, block = KeyNormBounds::block;
  const auto holds_for_group = [&](auto&& free_of_head, double key_norm) {
    for (index_t h = kv * group; h < (kv + 1) * group; ++h)
      if (!cut_holds(summaries[b * g.heads_q + h], key_norm, g.slope(b, h), free_of_head(h),
                     tolerance))
        return false;
    return true;
  };
  const index_t local = sender.local_begin;
  if (sender.global_end() <= receiver.global_begin) {
    // Sender on the left: leave out [r.begin, c), c as large as the bound allows.
    index_t best = r.begin;
    for (index_t c = (local + r.begin) / block * block + block - local;; c += block) {
      const index_t cut = std::min(c, r.end);
      const double key_norm =
          double(nan_max(farther_norm, norms->before(b, kv, local + cut)));
      const double position = double(sender.global_begin + cut);
      const bool ok = holds_for_group(
          [&](index_t h) {
            return -summaries[b * g.heads_q + h].left_min + double(g.slope(b, h)) * (position - 1);
          },
          key_norm);
      if (!ok) break;
      best = cut;
      if (cut == r.end) break;
    }
    r.begin = best;
  } else if (sender.global_begin >= receiver.global_end()) {
    // Sender on the right: leave out [c, r.end), c as small as the bound allows.
    index_t best = r.end;
    for (index_t c = (local + r.end - 1) / block * block - local;; c -= block) {
      const index_t cut = std::max(c, r.begin);
      const double key_norm = double(nan_max(farther_norm, norms->from(b, kv, local + cut)));
      const double position = double(sender.global_begin + cut);
      const bool ok = holds_for_group(
          [&](index_t h) {
            return summaries[b * g.heads_q + h].right_max - double(g.slope(b, h)) * position;
          },
          key_norm);
      if (!ok) break;
      best = cut;
      if (cut == r.begin) break;
    }
    r.end = best;
  }
  if (r.empty()) return {};
  return r;
}

/// 64-key blocks (of the sender's rank-local indices) inside `hull` that `sent` does not touch:
/// what the tail cut saved.
inline index_t blocks_left_out(const Segment& sender, KeyRange hull, KeyRange sent) {
  if (hull.empty()) return 0;
  const index_t block = KeyNormBounds::block, local = sender.local_begin;
  index_t count = 0;
  for (index_t i = (local + hull.begin) / block; i <= (local + hull.end - 1) / block; ++i) {
    const index_t lo = std::max(hull.begin, i * block - local),
                  hi = std::min(hull.end, (i + 1) * block - local);
    if (sent.empty() || hi <= sent.begin || lo >= sent.end) ++count;
  }
  return count;
}

}  // namespace mpi
}  // namespace detail
}  // namespace alibi
