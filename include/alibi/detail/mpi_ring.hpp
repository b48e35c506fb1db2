#pragma once
// The ring of a distributed prefill or backward: who sends which keys to whom, the messages, and
// the partial results' merge.
//
// Schedule. At step s = 1 .. P-1 rank r ships its own keys to rank r + s and receives those of
// rank r - s (mod P): the ring's P - 1 steps with one block in and out per step, but each block
// goes straight to its user, so every (sender, receiver) pair can leave out what the receiver
// does not need (mpi_plan.hpp) instead of relaying it. Two steps are in flight at a time
// (double buffering: memory stays O(slice)), and they travel while the local tiles run; the
// local calls are interleaved with MPI_Testall so that large messages progress meanwhile.
//
// Partials. Every (receiving segment, sending segment, batch row, kv head) is one
// alibi::attention call with explicit positions; its output and lse merge into the rows' running
// result in double, in a fixed order (own keys, then steps in order), so a result does not
// depend on message timing.

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "../attention.hpp"
#include "../backward.hpp"
#include "mpi_agree.hpp"
#include "mpi_plan.hpp"
#include "validate_backward.hpp"

namespace alibi {
namespace detail {
namespace mpi {

/// A private duplicate of the caller's communicator: our messages never match theirs.
class OwnComm {
 public:
  explicit OwnComm(MPI_Comm comm) { MPI_Comm_dup(comm, &comm_); }
  ~OwnComm() { MPI_Comm_free(&comm_); }
  OwnComm(const OwnComm&) = delete;
  OwnComm& operator=(const OwnComm&) = delete;
  MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

/// Messages of more than this many bytes travel in pieces (MPI counts are int).
constexpr std::size_t max_piece = std::size_t(1) << 30;
/// Tags: kind (keys and values, or their gradients) times this, plus the piece.
constexpr int tag_kind = 1 << 14;
enum MessageKind { key_values = 0, key_gradients = 1 };

/// Posts a non-blocking send or receive of `bytes` bytes in pieces.
inline void post_bytes(bool send, void* data, std::size_t bytes, int peer, MessageKind kind,
                       MPI_Comm comm, std::vector<MPI_Request>& requests) {
  char* p = static_cast<char*>(data);
  for (std::size_t done = 0, piece = 0; done < bytes; done += max_piece, ++piece) {
    const int count = int(std::min(max_piece, bytes - done));
    MPI_Request request;
    const int tag = int(kind) * tag_kind + int(piece);
    if (send)
      MPI_Isend(p + done, count, MPI_BYTE, peer, tag, comm, &request);
    else
      MPI_Irecv(p + done, count, MPI_BYTE, peer, tag, comm, &request);
    requests.push_back(request);
  }
}

/// Waits for `requests`, sleeping between tests: MPI_Waitall spins, and a spinning rank takes a
/// core from the ranks still computing when ranks share cores (a node with more ranks than
/// cores, or with threads per rank). The sleep costs at most ~0.1 ms of latency per wait.
inline void wait_all(std::vector<MPI_Request>& requests) {
  while (!requests.empty()) {
    int done = 0;
    MPI_Testall(int(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
    if (done) break;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  requests.clear();
}

/// A view of `length` tokens of a view from token `begin` (the seq dimension).
template <class T>
TensorView<T> tokens(const TensorView<T>& view, index_t begin, index_t length) {
  return {view.data + begin * view.strides[1],
          {view.batch(), length, view.heads(), view.head_dim()},
          view.strides};
}

/// The shape of the whole distributed call and who holds what: the same on every rank.
struct Ring {
  MPI_Comm comm;
  int me = 0, ranks = 1;
  Geometry g;  // this rank's sizes; slopes, scale, mask
  std::vector<std::vector<Segment>> segs;
  index_t group = 1;
  /// Key ranges (within the sending segment) per (peer, b, kv, sending segment): what this rank
  /// sends to the peer, and what it receives from it.
  std::vector<KeyRange> send, receive;
  /// The mask's hull of what is sent, for counting the blocks the cut left out.
  std::vector<KeyRange> send_hull;

  Ring(MPI_Comm c, const std::vector<CallHeader>& headers, const Geometry& geometry,
       LayoutKind layout)
      : comm(c), g(geometry) {
    MPI_Comm_rank(comm, &me);
    MPI_Comm_size(comm, &ranks);
    std::vector<index_t> lengths;
    for (const CallHeader& h : headers) lengths.push_back(h.length);
    segs = layout_segments(lengths, layout);
    group = g.heads_q / g.heads_kv;
    const std::size_t n = std::size_t(ranks) * per_peer();
    send.assign(n, {});
    receive.assign(n, {});
    send_hull.assign(n, {});
  }

  std::size_t per_peer() const { return std::size_t(g.batch * g.heads_kv * 2); }
  std::size_t at(int peer, index_t b, index_t kv, std::size_t s) const {
    return std::size_t(peer) * per_peer() + std::size_t((b * g.heads_kv + kv) * 2) + s;
  }
  index_t length() const {
    index_t n = 0;
    for (const Segment& s : segs[std::size_t(me)]) n += s.length;
    return n;
  }
  /// Tokens in the message to or from `peer` per the ranges `table`.
  std::size_t message_tokens(const std::vector<KeyRange>& table, int peer) const {
    std::size_t count = 0;
    for (std::size_t i = 0; i < per_peer(); ++i) {
      const KeyRange r = table[std::size_t(peer) * per_peer() + i];
      if (!r.empty()) count += std::size_t(r.end - r.begin);
    }
    return count;
  }
};

/// The cut's inputs, gathered from every rank: row summaries per (rank, segment, b, h) and the
/// largest key norm per (rank, segment, b, kv).
struct SkipInputs {
  std::vector<double> all;  // per rank: 2 x B x Hq x 3 summaries, then 2 x B x Hkv norms
  index_t stride = 0, batch = 0, heads_q = 0, heads_kv = 0;

  RowSummary summary(int rank, std::size_t seg, index_t b, index_t h) const {
    const double* s = all.data() + rank * stride + ((index_t(seg) * batch + b) * heads_q + h) * 3;
    return {s[0], s[1], s[2]};
  }
  float norm(int rank, std::size_t seg, index_t b, index_t kv) const {
    return float(
        all[std::size_t(rank * stride + 2 * batch * heads_q * 3 +
                        (index_t(seg) * batch + b) * heads_kv + kv)]);
  }
};

/// Plans what every pair ships: with the tail cut when `tolerance` (per side) is positive, else
/// the mask's hulls. `lse_low` holds lower bounds of this rank's rows' lse, [B, Hq, n]. One
/// allgather (summaries and norms, only when cutting) and one alltoall (the ranges).
template <class T>
void plan_ring(Ring& ring, const TensorView<const T>& q, const TensorView<const T>& k,
               const float* lse_low, double tolerance, int threads) {
  const Geometry& g = ring.g;
  const index_t n = ring.length(), B = g.batch, Hq = g.heads_q, Hkv = g.heads_kv;
  const auto& mine = ring.segs[std::size_t(ring.me)];
  const bool cut = tolerance > 0 && ring.ranks > 1;
  KeyNormBounds norms;
  SkipInputs skip;
  if (cut) {
    norms = KeyNormBounds::measure(k, threads);
    norms.prepare_suffix();
    skip.batch = B;
    skip.heads_q = Hq;
    skip.heads_kv = Hkv;
    skip.stride = 2 * B * Hq * 3 + 2 * B * Hkv;
    std::vector<double> local(std::size_t(skip.stride), 0.0);
    for (std::size_t s = 0; s < 2; ++s)
      for (index_t b = 0; b < B; ++b) {
        for (index_t h = 0; h < Hq; ++h) {
          RowSummary r;
          if (s < mine.size() && !mine[s].empty())
            r = summarise_rows(g, q, b, h, mine[s].local_begin, mine[s].length,
                               mine[s].global_begin, lse_low + (b * Hq + h) * n + mine[s].local_begin);
          double* d = local.data() + ((index_t(s) * B + b) * Hq + h) * 3;
          d[0] = r.q_max;
          d[1] = r.left_min;
          d[2] = r.right_max;
        }
        for (index_t kv = 0; kv < Hkv; ++kv) {
          float m = 0;
          if (s < mine.size() && !mine[s].empty())
            m = s == 0 ? norms.before(b, kv, mine[s].local_begin + mine[s].length)
                       : norms.from(b, kv, mine[s].local_begin);
          local[std::size_t(2 * B * Hq * 3 + (index_t(s) * B + b) * Hkv + kv)] = double(m);
        }
      }
    skip.all.resize(std::size_t(skip.stride * ring.ranks));
    MPI_Allgather(local.data(), int(skip.stride), MPI_DOUBLE, skip.all.data(), int(skip.stride),
                  MPI_DOUBLE, ring.comm);
  }

  // The largest key norm of the whole sequence beyond `sender`, away from the receiver.
  const auto farther_norm = [&](const Segment& sender, bool left, index_t b, index_t kv) {
    float m = 0;
    for (int r = 0; r < ring.ranks; ++r)
      for (std::size_t s = 0; s < ring.segs[std::size_t(r)].size(); ++s) {
        const Segment& other = ring.segs[std::size_t(r)][s];
        if (other.empty()) continue;
        if (left ? other.global_end() <= sender.global_begin
                 : other.global_begin >= sender.global_end())
          m = nan_max(m, skip.norm(r, s, b, kv));
      }
    return m;
  };

  std::vector<RowSummary> summaries(std::size_t(B * Hq));
  for (int peer = 0; peer < ring.ranks; ++peer) {
    const auto& theirs = ring.segs[std::size_t(peer)];
    for (std::size_t sr = 0; sr < theirs.size(); ++sr) {
      if (cut)
        for (index_t b = 0; b < B; ++b)
          for (index_t h = 0; h < Hq; ++h)
            summaries[std::size_t(b * Hq + h)] = skip.summary(peer, sr, b, h);
      for (std::size_t ss = 0; ss < mine.size(); ++ss)
        for (index_t b = 0; b < B; ++b)
          for (index_t kv = 0; kv < Hkv; ++kv) {
            const Segment& sender = mine[ss];
            const bool left = sender.global_end() <= theirs[sr].global_begin;
            const KeyRange need = needed_keys(
                g, theirs[sr], sender, b, kv, summaries.data(), cut ? &norms : nullptr,
                cut ? farther_norm(sender, left, b, kv) : 0.0f, tolerance);
            const KeyRange hull = mask_hull(g, theirs[sr], sender);
            const auto unite = [](KeyRange& into, KeyRange r) {
              if (r.empty()) return;
              into = into.empty() ? r
                                  : KeyRange{std::min(into.begin, r.begin), std::max(into.end, r.end)};
            };
            unite(ring.send[ring.at(peer, b, kv, ss)], need);
            unite(ring.send_hull[ring.at(peer, b, kv, ss)], hull);
          }
    }
  }
  // Ranges as pairs of int64, per peer.
  std::vector<std::int64_t> out(ring.send.size() * 2), in(out.size());
  for (std::size_t i = 0; i < ring.send.size(); ++i) {
    out[2 * i] = ring.send[i].begin;
    out[2 * i + 1] = ring.send[i].end;
  }
  const int count = int(ring.per_peer() * 2);
  MPI_Alltoall(out.data(), count, MPI_INT64_T, in.data(), count, MPI_INT64_T, ring.comm);
  for (std::size_t i = 0; i < ring.receive.size(); ++i) ring.receive[i] = {in[2 * i], in[2 * i + 1]};
}

/// Packs the keys and values of this rank named by `ranges` (one peer's slice of a table) in
/// message order: per (b, kv, segment), the keys' rows, then the values'.
template <class T>
std::vector<T> pack_key_values(const Ring& ring, int peer, const TensorView<const T>& k,
                               const TensorView<const T>& v) {
  const Geometry& g = ring.g;
  std::vector<T> buffer(ring.message_tokens(ring.send, peer) *
                        std::size_t(g.head_dim + g.value_dim));
  T* p = buffer.data();
  const auto& mine = ring.segs[std::size_t(ring.me)];
  for (index_t b = 0; b < g.batch; ++b)
    for (index_t kv = 0; kv < g.heads_kv; ++kv)
      for (std::size_t s = 0; s < 2; ++s) {
        const KeyRange r = ring.send[ring.at(peer, b, kv, s)];
        if (r.empty()) continue;
        for (const auto* x : {&k, &v})
          for (index_t t = r.begin; t < r.end; ++t) {
            const T* row = x->row(b, mine[s].local_begin + t, kv);
            for (index_t d = 0; d < x->head_dim(); ++d) *p++ = row[d * x->strides[3]];
          }
      }
  return buffer;
}

/// Running results of this rank's rows in double: out [B, n, Hq, Dv] and lse [B, Hq, n].
struct RowAccumulator {
  index_t batch, length, heads, value_dim;
  std::vector<double> out, lse;
  RowAccumulator(index_t b, index_t n, index_t h, index_t dv)
      : batch(b),
        length(n),
        heads(h),
        value_dim(dv),
        out(std::size_t(b * n * h * dv), 0.0),
        lse(std::size_t(b * h * n), -std::numeric_limits<double>::infinity()) {}

  /// Merges a partial of rows [row, row + rows) of heads [head, head + heads) of batch row b:
  /// `part` [rows, heads, Dv], `part_lse` [heads, rows].
  template <class T>
  void merge(index_t b, index_t row, index_t rows, index_t head, index_t count, const T* part,
             const float* part_lse) {
    const double minus_inf = -std::numeric_limits<double>::infinity();
    for (index_t i = 0; i < rows; ++i)
      for (index_t hh = 0; hh < count; ++hh) {
        const index_t h = head + hh;
        double& total = lse[std::size_t((b * heads + h) * length + row + i)];
        double* o = out.data() + ((b * length + row + i) * heads + h) * value_dim;
        const T* x = part + (i * count + hh) * value_dim;
        const double l = part_lse[hh * rows + i];
        if (l == minus_inf) continue;
        if (std::isnan(l) || std::isnan(total)) {
          total = NAN;
          for (index_t d = 0; d < value_dim; ++d) o[d] = NAN;
          continue;
        }
        const double m = std::max(total, l);
        const double wa = std::exp(total - m), wb = std::exp(l - m), sum = wa + wb;
        for (index_t d = 0; d < value_dim; ++d) o[d] = (wa * o[d] + wb * double(x[d])) / sum;
        total = m + std::log(sum);
      }
  }
};

/// The slopes of one (b, kv group) as a Params of its own, for a call on that group's heads.
/// `with_sinks`: this call is the one partial of its rows that carries params.sink_logits.
inline Params group_params(const Geometry& g, const Params& user, index_t b, index_t kv,
                           index_t query_position, index_t key_position, float tolerance,
                           bool with_sinks = false) {
  Params p;
  p.causal = user.causal;
  p.scale = g.scale;
  p.window_left = user.window_left;
  p.window_right = user.window_right;
  p.num_threads = user.num_threads;
  p.tail_tolerance = tolerance;
  p.query_offset = query_position;
  p.key_offset = key_position;
  const index_t group = g.heads_q / g.heads_kv;
  for (index_t h = kv * group; h < (kv + 1) * group; ++h) p.slopes.push_back(g.slope(b, h));
  if (with_sinks && !user.sink_logits.empty())
    p.sink_logits.assign(user.sink_logits.begin() + kv * group,
                         user.sink_logits.begin() + (kv + 1) * group);
  return p;
}

/// The local checks of a distributed forward or backward: what alibi::attention checks, plus
/// positions and lengths that only the ring may set.
inline void check_ring_params(const char* fn, const Params& params, index_t q_len,
                              index_t k_len) {
  if (params.query_offset || params.key_offset)
    fail(fn, "params.query_offset and key_offset are set from the ranks' lengths; leave them unset");
  if (!params.seqlens_k.empty() || !params.seqlens_q.empty())
    fail(fn, "params.seqlens_k and seqlens_q are not supported (each rank's slice is all valid)");
  if (q_len != k_len)
    fail(fn, "q has " + std::to_string(q_len) + " tokens but k has " + std::to_string(k_len) +
                 ": each rank holds the same tokens' queries, keys and values");
}

/// Throws on every rank when the ranks' lengths sum beyond any position.
inline void check_total(const char* fn, const std::vector<CallHeader>& headers) {
  index_t total = 0;
  for (const CallHeader& h : headers)
    if (add_overflows(total, h.length, &total) || total > max_position)
      fail(fn, "the ranks' lengths sum beyond 2^59 positions");
}

/// Runs the ring: posts steps two at a time, calls `local()` (interleaving `progress`), then
/// `received(peer, buffer)` per step in order. Returns bytes sent and received.
template <class T, class Local, class Received>
void run_steps(const Ring& ring, const TensorView<const T>& k, const TensorView<const T>& v,
               Local&& local, Received&& received, std::int64_t& sent, std::int64_t& got) {
  const int P = ring.ranks, me = ring.me;
  struct Step {
    std::vector<T> out, in;
    std::vector<MPI_Request> send, receive;
  };
  std::vector<Step> steps(static_cast<std::size_t>(P));
  const std::size_t row = std::size_t(ring.g.head_dim + ring.g.value_dim);
  const auto post = [&](int s) {
    if (s >= P) return;
    Step& step = steps[std::size_t(s)];
    const int to = (me + s) % P, from = (me - s + P) % P;
    step.out = pack_key_values(ring, to, k, v);
    step.in.resize(ring.message_tokens(ring.receive, from) * row);
    post_bytes(true, step.out.data(), step.out.size() * sizeof(T), to, key_values, ring.comm,
               step.send);
    post_bytes(false, step.in.data(), step.in.size() * sizeof(T), from, key_values, ring.comm,
               step.receive);
    sent += std::int64_t(step.out.size() * sizeof(T));
    got += std::int64_t(step.in.size() * sizeof(T));
  };
  const auto progress = [&] {
    for (Step& step : steps)
      for (auto* requests : {&step.send, &step.receive})
        if (!requests->empty()) {
          int done = 0;
          MPI_Testall(int(requests->size()), requests->data(), &done, MPI_STATUSES_IGNORE);
        }
  };
  post(1);
  post(2);
  local(progress);
  for (int s = 1; s < P; ++s) {
    Step& step = steps[std::size_t(s)];
    wait_all(step.receive);
    post(s + 2);
    received((me - s + P) % P, step.in, progress);
    std::vector<T>().swap(step.in);
    wait_all(step.send);
    std::vector<T>().swap(step.out);
  }
}

/// alibi::mpi::attention (see mpi.hpp).
template <class T, class StatsT>
void ring_forward(MPI_Comm user_comm, TensorView<const T> q, TensorView<const T> k,
                  TensorView<const T> v, TensorView<T> out, const Params& params, float* lse,
                  StatsT* stats, LayoutKind layout) {
  const char* fn = "alibi::mpi::attention";
  const std::vector<CallHeader> headers = agree(fn, user_comm, [&] {
    check_ring_params(fn, params, q.seq(), k.seq());
    validate_forward(fn, q, k, v, out, params, lse);
    return describe_call(q.seq(), q.batch(), q.heads(), k.heads(), q.head_dim(), v.head_dim(),
                         params, int(layout), sizeof(T));
  });
  check_total(fn, headers);
  const OwnComm comm(user_comm);
  const Geometry g(q.batch(), q.seq(), k.seq(), q.heads(), k.heads(), q.head_dim(), v.head_dim(),
                   params);
  Ring ring(comm.get(), headers, g, layout);
  const index_t n = q.seq(), B = g.batch, Hq = g.heads_q, Dv = g.value_dim, group = ring.group;
  const auto& mine = ring.segs[std::size_t(ring.me)];
  const double tolerance = params.tail_tolerance;
  const bool cut = tolerance > 0 && ring.ranks > 1;
  // Half the tolerance for the keys the ring leaves out (split between the sides), half for
  // what the local calls' own tail skip leaves out.
  const float local_tolerance = cut ? params.tail_tolerance / 2 : params.tail_tolerance;
  const double side_tolerance = tolerance / (params.causal ? 2 : 4);

  // Lower bounds of the rows' lse, for the cut: each row against its nearest 64 keys.
  std::vector<float> lse_low;
  if (cut) {
    lse_low.assign(std::size_t(B * Hq * n), 0.0f);
    for (const Segment& s : mine) {
      if (s.empty()) continue;
      Params near = params;
      near.window_left = params.window_left < 0 ? 63 : std::min<index_t>(params.window_left, 63);
      if (!params.causal)
        near.window_right =
            params.window_right < 0 ? 63 : std::min<index_t>(params.window_right, 63);
      near.query_offset = near.key_offset = s.global_begin;
      near.stats = nullptr;
      std::vector<T> scratch(std::size_t(B * s.length * Hq * Dv));
      std::vector<float> part(std::size_t(B * Hq * s.length));
      alibi::attention<T>(tokens(q, s.local_begin, s.length), tokens(k, s.local_begin, s.length),
                          tokens(v, s.local_begin, s.length),
                          make_view(scratch.data(), B, s.length, Hq, Dv), near, part.data());
      for (index_t b = 0; b < B; ++b)
        for (index_t h = 0; h < Hq; ++h)
          std::copy_n(part.data() + (b * Hq + h) * s.length, s.length,
                      lse_low.data() + (b * Hq + h) * n + s.local_begin);
    }
  }
  plan_ring(ring, q, k, lse_low.data(), cut ? side_tolerance : 0.0, params.num_threads);

  RowAccumulator acc(B, n, Hq, Dv);
  AttentionStats visited;
  std::vector<T> part;
  std::vector<float> part_lse;
  // One partial: rows of segment `rows` of (b, kv group) against keys `kk`, `vv` at `key_at`.
  // `sinks`: the partial of the rows' own keys, the one that carries params.sink_logits.
  const auto attend = [&](const Segment& rows, index_t b, index_t kv, TensorView<const T> kk,
                          TensorView<const T> vv, index_t key_at, bool sinks) {
    part.resize(std::size_t(rows.length * group * Dv));
    part_lse.resize(std::size_t(group * rows.length));
    Params p = group_params(g, params, b, kv, rows.global_begin, key_at, local_tolerance, sinks);
    AttentionStats s;
    p.stats = &s;
    const TensorView<const T> qq{q.row(b, rows.local_begin, kv * group),
                                 {1, rows.length, group, g.head_dim},
                                 q.strides};
    alibi::attention<T>(qq, kk, vv, make_view(part.data(), 1, rows.length, group, Dv), p,
                        part_lse.data());
    visited.keys_visited += s.keys_visited;
    visited.keys_allowed += s.keys_allowed;
    acc.merge(b, rows.local_begin, rows.length, kv * group, group, part.data(), part_lse.data());
  };

  StatsT totals{};
  const auto local = [&](auto&& progress) {
    for (const Segment& rows : mine)
      for (std::size_t ss = 0; ss < mine.size(); ++ss)
        for (index_t b = 0; b < B; ++b)
          for (index_t kv = 0; kv < g.heads_kv; ++kv) {
            if (rows.empty()) continue;
            const Segment& keys = mine[ss];
            // Own keys: all the mask allows (no message to save).
            const KeyRange r = mask_hull(g, rows, keys);
            if (r.empty()) continue;
            const TensorView<const T> kk = tokens(k, keys.local_begin + r.begin, r.end - r.begin);
            const TensorView<const T> vv = tokens(v, keys.local_begin + r.begin, r.end - r.begin);
            attend(rows, b, kv,
                   {kk.row(b, 0, kv), {1, r.end - r.begin, 1, g.head_dim}, kk.strides},
                   {vv.row(b, 0, kv), {1, r.end - r.begin, 1, Dv}, vv.strides},
                   keys.global_begin + r.begin, &keys == &rows);
            progress();
          }
  };
  const auto received = [&](int peer, const std::vector<T>& buffer, auto&& progress) {
    const T* p = buffer.data();
    const auto& theirs = ring.segs[std::size_t(peer)];
    for (index_t b = 0; b < B; ++b)
      for (index_t kv = 0; kv < g.heads_kv; ++kv)
        for (std::size_t ss = 0; ss < 2; ++ss) {
          const KeyRange r = ring.receive[ring.at(peer, b, kv, ss)];
          if (r.empty()) continue;
          const index_t len = r.end - r.begin;
          const T* keys = p;
          const T* values = p + len * g.head_dim;
          p += len * (g.head_dim + Dv);
          for (const Segment& rows : mine) {
            KeyRange use = mask_hull(g, rows, theirs[ss]);
            use = {std::max(use.begin, r.begin), std::min(use.end, r.end)};
            if (use.empty() || rows.empty()) continue;
            const index_t skip = use.begin - r.begin, count = use.end - use.begin;
            attend(rows, b, kv,
                   {keys + skip * g.head_dim, {1, count, 1, g.head_dim},
                    {count * g.head_dim, g.head_dim, g.head_dim, 1}},
                   {values + skip * Dv, {1, count, 1, Dv}, {count * Dv, Dv, Dv, 1}},
                   theirs[ss].global_begin + use.begin, false);
            progress();
          }
        }
  };
  run_steps(ring, k, v, local, received, totals.bytes_sent, totals.bytes_received);

  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < n; ++i)
      for (index_t h = 0; h < Hq; ++h) {
        const double* src = acc.out.data() + ((b * n + i) * Hq + h) * Dv;
        T* dst = out.row(b, i, h);
        for (index_t d = 0; d < Dv; ++d) dst[d * out.strides[3]] = T(src[d]);
      }
  if (lse != nullptr)
    for (std::size_t i = 0; i < acc.lse.size(); ++i) lse[i] = float(acc.lse[i]);
  for (int peer = 0; peer < ring.ranks; ++peer)
    if (peer != ring.me)
      for (index_t b = 0; b < B; ++b)
        for (index_t kv = 0; kv < g.heads_kv; ++kv)
          for (std::size_t s = 0; s < mine.size(); ++s)
            totals.blocks_skipped += blocks_left_out(mine[s], ring.send_hull[ring.at(peer, b, kv, s)],
                                                     ring.send[ring.at(peer, b, kv, s)]);
  if (stats != nullptr) *stats = totals;
  if (params.stats != nullptr) *params.stats = visited;
}

}  // namespace mpi
}  // namespace detail
}  // namespace alibi
