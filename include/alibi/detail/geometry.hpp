#pragma once
// Positions, slopes and the allowed key range of a call, resolved once from Params: the one place
// that knows FlashAttention's alignment conventions. The kernel and the reference both read it.

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "../params.hpp"
#include "../slopes.hpp"

namespace alibi {
namespace detail {

/// Half-open range [begin, end) of key indices; empty when end <= begin.
struct KeyRange {
  index_t begin = 0;
  index_t end = 0;
  bool empty() const { return end <= begin; }
};

inline index_t round_up(index_t x, index_t multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

/// Window extents beyond this are unbounded; keeps every position sum inside int64.
constexpr index_t unbounded_window = index_t(1) << 62;

struct Geometry {
  index_t batch = 0, seq_q = 0, seq_k = 0, heads_q = 0, heads_kv = 0, head_dim = 0, value_dim = 0;
  float scale = 1.0f;
  bool causal = true;
  index_t window_left = unbounded_window, window_right = unbounded_window;
  std::vector<float> slopes;  // heads_q values, or batch * heads_q
  std::vector<index_t> seqlens_k;
  std::vector<index_t> seqlens_q;  // per batch row valid (right-padded) queries; empty: all
  /// Packed sequences (attention_varlen, batch 1): sequence s is the queries
  /// [cu_seqlens_q[s], cu_seqlens_q[s + 1]) and the keys [cu_seqlens_k[s], cu_seqlens_k[s + 1]);
  /// empty: one sequence. Key t keeps position key_offset + t; a sequence's queries sit
  /// bottom-right of its own keys, so every distance inside a sequence is its own.
  std::vector<index_t> cu_seqlens_q, cu_seqlens_k;
  std::optional<index_t> query_offset;
  index_t key_offset = 0;
  float tail_tolerance = 0;
  std::vector<float> sink_logits;  // heads_q values, or empty: no sinks (Params::sink_logits)
  /// Per batch row, the position of query 0 (internal: a split-KV call keeps each row's
  /// positions while its key range shrinks); overrides query_offset when not empty.
  std::vector<index_t> batch_query_offsets;

  Geometry(index_t batch_, index_t seq_q_, index_t seq_k_, index_t heads_q_, index_t heads_kv_,
           index_t head_dim_, index_t value_dim_, const Params& p)
      : batch(batch_),
        seq_q(seq_q_),
        seq_k(seq_k_),
        heads_q(heads_q_),
        heads_kv(heads_kv_),
        head_dim(head_dim_),
        value_dim(value_dim_),
        scale(p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(static_cast<float>(head_dim_))),
        causal(p.causal),
        window_left(p.window_left < 0 ? unbounded_window
                                      : std::min(p.window_left, unbounded_window)),
        window_right(p.window_right < 0 ? unbounded_window
                                        : std::min(p.window_right, unbounded_window)),
        slopes(p.slopes.empty() ? alibi::slopes(static_cast<int>(heads_q_)) : p.slopes),
        seqlens_k(p.seqlens_k),
        seqlens_q(p.seqlens_q),
        query_offset(p.query_offset),
        key_offset(p.key_offset.value_or(0)),
        tail_tolerance(p.tail_tolerance),
        sink_logits(p.sink_logits) {}

  /// Number of valid keys in batch row b.
  index_t valid_keys(index_t b) const { return seqlens_k.empty() ? seq_k : seqlens_k[b]; }
  /// Number of valid queries in batch row b (the rest is right padding: no key, never read).
  index_t valid_queries(index_t b) const { return seqlens_q.empty() ? seq_q : seqlens_q[b]; }
  bool packed() const { return !cu_seqlens_q.empty(); }
  /// The packed sequence that query i belongs to (packed() only).
  index_t sequence_of(index_t i) const {
    const auto next = std::upper_bound(cu_seqlens_q.begin(), cu_seqlens_q.end(), i);
    return index_t(next - cu_seqlens_q.begin()) - 1;
  }
  /// Absolute position of query i of batch row b.
  index_t query_position(index_t b, index_t i) const {
    if (!batch_query_offsets.empty()) return batch_query_offsets[b] + i;
    if (packed()) {
      const std::size_t s = std::size_t(sequence_of(i));
      return key_offset + cu_seqlens_k[s + 1] - cu_seqlens_q[s + 1] + i;
    }
    return query_offset ? *query_offset + i : key_offset + valid_keys(b) - valid_queries(b) + i;
  }
  /// Absolute position of key t.
  index_t key_position(index_t t) const { return key_offset + t; }
  /// Where the slope of (batch row b, head h) sits in `slopes` (per head, or per batch row and
  /// head); gradients of the slopes have the same layout.
  std::size_t slope_index(index_t b, index_t h) const {
    return slopes.size() == static_cast<std::size_t>(heads_q) ? std::size_t(h)
                                                              : std::size_t(b * heads_q + h);
  }
  float slope(index_t b, index_t h) const { return slopes[slope_index(b, h)]; }
  index_t kv_head(index_t h) const { return h / (heads_q / heads_kv); }
  bool has_sinks() const { return !sink_logits.empty(); }

  /// Whether a query at position p may attend a key at position t (the mask, elementwise).
  bool allowed(index_t p, index_t t) const {
    if (causal && t > p) return false;
    return p - window_left <= t && t <= p + window_right;
  }
  /// A per-row constant distance the kernels take out of the bias: when every key a row may
  /// attend is at least `far` positions away on one side, -m |p - t| is computed as
  /// -m (|p - t| - |offset|) and m |offset| is added back to the lse in double, so that the
  /// float logits stay small (and exact) however far the keys are. Signed: positive when the
  /// keys precede p.
  index_t bias_offset(index_t p, KeyRange keys, index_t far) const {
    if (keys.empty()) return 0;
    const index_t first = key_position(keys.begin), last = key_position(keys.end - 1);
    if (p - last >= far) return p - last;
    if (first - p >= far) return -(first - p);
    return 0;
  }

  /// The keys a query at position p may attend in batch row b: the mask is always one interval.
  KeyRange allowed_keys(index_t b, index_t p) const {
    const index_t last = causal ? std::min(p, p + window_right) : p + window_right;
    KeyRange r{std::max<index_t>(0, p - window_left - key_offset),
               std::min(valid_keys(b), last - key_offset + 1)};
    if (r.empty()) r = {0, 0};
    return r;
  }

  /// The keys query i of batch row b may attend: its mask interval, within its own sequence when
  /// packed; none for a padding query.
  KeyRange query_keys(index_t b, index_t i) const {
    if (i >= valid_queries(b)) return {0, 0};
    KeyRange r = allowed_keys(b, query_position(b, i));
    if (packed()) {
      const std::size_t s = std::size_t(sequence_of(i));
      r = {std::max(r.begin, cu_seqlens_k[s]), std::min(r.end, cu_seqlens_k[s + 1])};
      if (r.empty()) r = {0, 0};
    }
    return r;
  }
  /// Whether key t is one query i of row b may see at all (its row's valid keys, its own
  /// sequence), before the mask: the reference's elementwise test.
  bool key_in_reach(index_t b, index_t i, index_t t) const {
    if (i >= valid_queries(b) || t >= valid_keys(b)) return false;
    if (!packed()) return true;
    const std::size_t s = std::size_t(sequence_of(i));
    return cu_seqlens_k[s] <= t && t < cu_seqlens_k[s + 1];
  }
};

}  // namespace detail
}  // namespace alibi
