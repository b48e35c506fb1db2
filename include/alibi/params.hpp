#pragma once
// What an attention call computes beyond its tensors: mask, slopes, scale, positions, threads.

#include <cstdint>
#include <optional>
#include <vector>

#include "tensor_view.hpp"

namespace alibi {

/// What a call of alibi::attention did, for tests and tuning (see Params::stats): keys visited,
/// summed over tasks (blocks of up to 128 query rows), against the keys those tasks' masks allow.
struct AttentionStats {
  std::int64_t keys_visited = 0;
  std::int64_t keys_allowed = 0;
  /// Over a memory-budgeted cache: the largest, over the call's query rows, of the bound on the
  /// total weight the evicted keys could have carried relative to the row's sum (see
  /// Params::max_evicted_weight). The output differs from attention over the full, never-evicted
  /// history by at most about 2 x evicted_weight_bound x max |v|. 0 when nothing was evicted.
  double evicted_weight_bound = 0;
};

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
  /// Per batch row, the number of valid queries of a right-padded q: row b's queries are
  /// [0, seqlens_q[b]), the last sitting at the position of its last valid key (bottom-right per
  /// row, or from query_offset when set). Padding queries (i >= seqlens_q[b]) are never read;
  /// their out rows are written 0 and their lse -inf, as rows with no allowed key. Empty: all Sq
  /// queries are valid in every row.
  std::vector<index_t> seqlens_q;
  /// Tail skip: key tiles are walked from the nearest to the farthest, and the walk stops once
  /// the total weight all remaining keys could still carry (bounded by Cauchy-Schwarz on q.k and
  /// the linear bias, with the largest remaining key norm) is at most tail_tolerance times each
  /// row's running sum. Every normalised weight then moves by at most about tail_tolerance
  /// (relative) and the output by at most about 2 x tail_tolerance x max |v|. The default,
  /// Params::round_off (2^-24), stands for the round-off of the accumulation type: 2^-24 with
  /// float, half or bfloat16 storage, 2^-53 with double, so results stay exact to their
  /// precision; 0 visits every allowed key. A zero slope, huge key norms or NaN simply keep the
  /// walk going. alibi::reference::attention ignores it.
  float tail_tolerance = round_off;
  /// The default tail_tolerance: the accumulation type's unit round-off (see above).
  static constexpr float round_off = 0x1p-24f;
  /// When not null, the call stores what it did there.
  AttentionStats* stats = nullptr;
  /// Learned attention sinks (gpt-oss): per query head, a logit s_h that joins every row's
  /// softmax as one more term with a zero value vector, so out = sum_t exp(l_t) v_t /
  /// (exp(s_h) + sum_t exp(l_t)) and lse = log(exp(s_h) + sum_t exp(l_t)). No bias and no mask
  /// apply to it: a row with no allowed key gets out = 0 and lse = s_h. Hq finite values; empty:
  /// none. The sink joins each call once: when partial results are merged (alibi::merge), pass
  /// it to one part only.
  std::vector<float> sink_logits;
  /// Over a memory-budgeted cache: a call whose AttentionStats::evicted_weight_bound would exceed
  /// this throws alibi::BudgetExceeded before anything is written. 0: no limit.
  double max_evicted_weight = 0;
};

}  // namespace alibi
