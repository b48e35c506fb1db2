#pragma once
// What an attention call computes beyond its tensors: mask, slopes, scale, positions, threads.

#include <optional>
#include <vector>

#include "tensor_view.hpp"

namespace alibi {

/// Options of `alibi::attention` and `alibi::reference::attention`.
///
/// Positions: key t sits at `key_offset + t` and query i at `query_offset + i`. Unset offsets
/// give FlashAttention's bottom-right alignment: keys start at 0 and the last query sits at the
/// position of the last valid key of its batch row, so a decode step (Sq = 1) against a cache
/// of Sk keys is the ordinary call.
struct Params {
  /// true: key t is allowed iff its position is <= the query's. false: bidirectional, with the
  /// symmetric bias -m * |p - t|.
  bool causal = true;
  /// Hq slopes (one per query head) or B * Hq (per batch row, then head); empty: slopes(Hq).
  std::vector<float> slopes;
  /// Multiplies q.k before the bias is added; 0 means 1 / sqrt(head_dim).
  float scale = 0.0f;
  /// Sliding window: key position t is allowed iff p - window_left <= t <= p + window_right;
  /// -1 leaves that side unbounded.
  index_t window_left = -1;
  index_t window_right = -1;
  /// Worker threads; 0 takes all the hardware's (with OpenMP, omp_get_max_threads(), so
  /// OMP_NUM_THREADS caps it). Called from inside a parallel region, the call runs serially.
  int num_threads = 0;
  /// Absolute position of the first query; unset: bottom-right aligned to the keys.
  std::optional<index_t> query_offset;
  /// Absolute position of the first key; unset: 0.
  std::optional<index_t> key_offset;
  /// Per batch row, the number of valid keys (a batch of caches of different fill); keys at
  /// index >= seqlens_k[b] are never attended, and bottom-right alignment uses this length.
  /// Empty: all Sk keys are valid in every row.
  std::vector<index_t> seqlens_k;
};

}  // namespace alibi
