#pragma once
// The distributed backward: the forward's ring (mpi_ring.hpp) with the true lse as the cut's row
// bound. Each received block's partial gradients are computed by the rank that owns the queries
// (dq stays there) and the block's dk and dv go back to the keys' owner, which adds them in step
// order. Slope gradients are summed over the ranks.

#include <mpi.h>

#include <algorithm>
#include <vector>

#include "mpi_ring.hpp"

namespace alibi {
namespace detail {
namespace mpi {

/// alibi::mpi::attention_backward (see mpi.hpp).
template <class T, class StatsT>
void ring_backward(MPI_Comm user_comm, TensorView<const T> q, TensorView<const T> k,
                   TensorView<const T> v, TensorView<const T> out, TensorView<const T> dout,
                   const float* lse, TensorView<T> dq, TensorView<T> dk, TensorView<T> dv,
                   const Params& params, float* dslopes, StatsT* stats, LayoutKind layout) {
  using Acc = accum_t<T>;
  const char* fn = "alibi::mpi::attention_backward";
  const std::vector<CallHeader> headers = agree(fn, user_comm, [&] {
    check_ring_params(fn, params, q.seq(), k.seq());
    if (!params.sink_logits.empty()) fail(fn, "params.sink_logits is not supported");
    validate_backward(fn, q, k, v, out, dout, lse, dq, dk, dv, params);
    CallHeader h = describe_call(q.seq(), q.batch(), q.heads(), k.heads(), q.head_dim(),
                                 v.head_dim(), params, int(layout), sizeof(T));
    h.wants_slope_gradient = dslopes != nullptr;
    return h;
  });
  check_total(fn, headers);
  const OwnComm comm(user_comm);
  const Geometry g(q.batch(), q.seq(), k.seq(), q.heads(), k.heads(), q.head_dim(), v.head_dim(),
                   params);
  Ring ring(comm.get(), headers, g, layout);
  const index_t n = q.seq(), B = g.batch, Hq = g.heads_q, Hkv = g.heads_kv, D = g.head_dim,
                Dv = g.value_dim, group = ring.group;
  const int P = ring.ranks, me = ring.me;
  const auto& mine = ring.segs[std::size_t(me)];
  const double tolerance = params.tail_tolerance;
  const bool cut = tolerance > 0 && P > 1;
  plan_ring(ring, q, k, lse, cut ? tolerance / (params.causal ? 2 : 4) : 0.0, params.num_threads);

  std::vector<double> gq(std::size_t(B * n * Hq * D), 0.0), gk(std::size_t(B * n * Hkv * D), 0.0),
      gv(std::size_t(B * n * Hkv * Dv), 0.0), gm(g.slopes.size(), 0.0);
  std::vector<T> part_dq, part_dk, part_dv;
  std::vector<float> part_lse, part_dm(static_cast<std::size_t>(group));
  // One partial: rows of segment `rows` of (b, kv group) against `count` keys at `key_at`; its
  // dq is added here, and its dk and dv (rows of D and Dv) to `to_dk` and `to_dv`.
  const auto attend = [&](const Segment& rows, index_t b, index_t kv, TensorView<const T> kk,
                          TensorView<const T> vv, index_t key_at, auto* to_dk, index_t dk_stride,
                          auto* to_dv, index_t dv_stride) {
    const index_t len = rows.length, count = kk.seq();
    part_dq.resize(std::size_t(len * group * D));
    part_dk.resize(std::size_t(count * D));
    part_dv.resize(std::size_t(count * Dv));
    part_lse.resize(std::size_t(group * len));
    for (index_t hh = 0; hh < group; ++hh)
      std::copy_n(lse + (b * Hq + kv * group + hh) * n + rows.local_begin, len,
                  part_lse.data() + hh * len);
    const Params p = group_params(g, params, b, kv, rows.global_begin, key_at, 0.0f);
    const auto rows_of = [&](const TensorView<const T>& x, index_t dim) {
      return TensorView<const T>{x.row(b, rows.local_begin, kv * group), {1, len, group, dim},
                                 x.strides};
    };
    alibi::attention_backward<T>(rows_of(q, D), kk, vv, rows_of(out, Dv), rows_of(dout, Dv),
                                 part_lse.data(), make_view(part_dq.data(), 1, len, group, D),
                                 make_view(part_dk.data(), 1, count, 1, D),
                                 make_view(part_dv.data(), 1, count, 1, Dv), p,
                                 dslopes != nullptr ? part_dm.data() : nullptr);
    for (index_t i = 0; i < len; ++i)
      for (index_t hh = 0; hh < group; ++hh) {
        double* dst = gq.data() + ((b * n + rows.local_begin + i) * Hq + kv * group + hh) * D;
        const T* src = part_dq.data() + (i * group + hh) * D;
        for (index_t d = 0; d < D; ++d) dst[d] += double(src[d]);
      }
    for (index_t t = 0; t < count; ++t) {
      for (index_t d = 0; d < D; ++d) to_dk[t * dk_stride + d] += Acc(part_dk[std::size_t(t * D + d)]);
      for (index_t d = 0; d < Dv; ++d)
        to_dv[t * dv_stride + d] += Acc(part_dv[std::size_t(t * Dv + d)]);
    }
    if (dslopes != nullptr)
      for (index_t hh = 0; hh < group; ++hh)
        gm[g.slope_index(b, kv * group + hh)] += double(part_dm[std::size_t(hh)]);
  };
  const auto key_rows = [&](const TensorView<const T>& x, index_t b, index_t kv, index_t begin,
                            index_t count) {
    return TensorView<const T>{x.row(b, begin, kv), {1, count, 1, x.head_dim()}, x.strides};
  };

  StatsT totals{};
  struct Step {
    std::vector<T> out, in;
    std::vector<Acc> grads_in, grads_out;
    std::vector<MPI_Request> send, receive, grads_receive, grads_send;
  };
  std::vector<Step> steps(static_cast<std::size_t>(P));
  const std::size_t width = std::size_t(D + Dv);
  const auto post = [&](int s) {
    if (s >= P) return;
    Step& step = steps[std::size_t(s)];
    const int to = (me + s) % P, from = (me - s + P) % P;
    step.out = pack_key_values(ring, to, k, v);
    step.in.resize(ring.message_tokens(ring.receive, from) * width);
    step.grads_in.resize(ring.message_tokens(ring.send, to) * width);
    post_bytes(true, step.out.data(), step.out.size() * sizeof(T), to, key_values, ring.comm,
               step.send);
    post_bytes(false, step.in.data(), step.in.size() * sizeof(T), from, key_values, ring.comm,
               step.receive);
    post_bytes(false, step.grads_in.data(), step.grads_in.size() * sizeof(Acc), to, key_gradients,
               ring.comm, step.grads_receive);
    totals.bytes_sent += std::int64_t(step.out.size() * sizeof(T));
    totals.bytes_received +=
        std::int64_t(step.in.size() * sizeof(T) + step.grads_in.size() * sizeof(Acc));
  };
  const auto progress = [&] {
    for (Step& step : steps)
      for (auto* requests : {&step.send, &step.receive, &step.grads_receive, &step.grads_send})
        if (!requests->empty()) {
          int done = 0;
          MPI_Testall(int(requests->size()), requests->data(), &done, MPI_STATUSES_IGNORE);
        }
  };

  post(1);
  post(2);
  for (const Segment& rows : mine)
    for (const Segment& keys : mine)
      for (index_t b = 0; b < B; ++b)
        for (index_t kv = 0; kv < Hkv; ++kv) {
          const KeyRange r = mask_hull(g, rows, keys);
          if (r.empty() || rows.empty()) continue;
          const index_t first = keys.local_begin + r.begin, count = r.end - r.begin;
          attend(rows, b, kv, key_rows(k, b, kv, first, count), key_rows(v, b, kv, first, count),
                 keys.global_begin + r.begin, gk.data() + ((b * n + first) * Hkv + kv) * D, Hkv * D,
                 gv.data() + ((b * n + first) * Hkv + kv) * Dv, Hkv * Dv);
          progress();
        }
  for (int s = 1; s < P; ++s) {
    Step& step = steps[std::size_t(s)];
    wait_all(step.receive);
    post(s + 2);
    const int from = (me - s + P) % P;
    const auto& theirs = ring.segs[std::size_t(from)];
    step.grads_out.assign(step.in.size(), Acc(0));
    std::size_t at = 0;
    for (index_t b = 0; b < B; ++b)
      for (index_t kv = 0; kv < Hkv; ++kv)
        for (std::size_t ss = 0; ss < 2; ++ss) {
          const KeyRange r = ring.receive[ring.at(from, b, kv, ss)];
          if (r.empty()) continue;
          const index_t len = r.end - r.begin;
          const T* keys = step.in.data() + at;
          const T* values = keys + len * D;
          Acc* grad_keys = step.grads_out.data() + at;
          Acc* grad_values = grad_keys + len * D;
          at += std::size_t(len) * width;
          for (const Segment& rows : mine) {
            KeyRange use = mask_hull(g, rows, theirs[ss]);
            use = {std::max(use.begin, r.begin), std::min(use.end, r.end)};
            if (use.empty() || rows.empty()) continue;
            const index_t skip = use.begin - r.begin, count = use.end - use.begin;
            attend(rows, b, kv, {keys + skip * D, {1, count, 1, D}, {count * D, D, D, 1}},
                   {values + skip * Dv, {1, count, 1, Dv}, {count * Dv, Dv, Dv, 1}},
                   theirs[ss].global_begin + use.begin, grad_keys + skip * D, D,
                   grad_values + skip * Dv, Dv);
            progress();
          }
        }
    post_bytes(true, step.grads_out.data(), step.grads_out.size() * sizeof(Acc), from,
               key_gradients, ring.comm, step.grads_send);
    totals.bytes_sent += std::int64_t(step.grads_out.size() * sizeof(Acc));
    std::vector<T>().swap(step.in);
  }
  // The gradients of this rank's keys that other ranks computed, in step order.
  for (int s = 1; s < P; ++s) {
    Step& step = steps[std::size_t(s)];
    wait_all(step.grads_receive);
    const int to = (me + s) % P;
    std::size_t at = 0;
    for (index_t b = 0; b < B; ++b)
      for (index_t kv = 0; kv < Hkv; ++kv)
        for (std::size_t ss = 0; ss < 2; ++ss) {
          const KeyRange r = ring.send[ring.at(to, b, kv, ss)];
          if (r.empty()) continue;
          const index_t len = r.end - r.begin;
          const Acc* grad_keys = step.grads_in.data() + at;
          const Acc* grad_values = grad_keys + len * D;
          at += std::size_t(len) * width;
          for (index_t t = 0; t < len; ++t) {
            const index_t row = mine[ss].local_begin + r.begin + t;
            double* dst_k = gk.data() + ((b * n + row) * Hkv + kv) * D;
            double* dst_v = gv.data() + ((b * n + row) * Hkv + kv) * Dv;
            for (index_t d = 0; d < D; ++d) dst_k[d] += double(grad_keys[t * D + d]);
            for (index_t d = 0; d < Dv; ++d) dst_v[d] += double(grad_values[t * Dv + d]);
          }
        }
  }
  for (Step& step : steps) {
    wait_all(step.send);
    wait_all(step.grads_send);
  }
  if (dslopes != nullptr) {
    std::vector<double> total(gm.size());
    MPI_Allreduce(gm.data(), total.data(), int(gm.size()), MPI_DOUBLE, MPI_SUM, ring.comm);
    for (std::size_t i = 0; i < total.size(); ++i) dslopes[i] = float(total[i]);
  }
  const auto store = [&](const std::vector<double>& from, const TensorView<T>& to) {
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 0; i < n; ++i)
        for (index_t h = 0; h < to.heads(); ++h) {
          const double* src = from.data() + ((b * n + i) * to.heads() + h) * to.head_dim();
          T* dst = to.row(b, i, h);
          for (index_t d = 0; d < to.head_dim(); ++d) dst[d * to.strides[3]] = T(src[d]);
        }
  };
  store(gq, dq);
  store(gk, dk);
  store(gv, dv);
  for (int peer = 0; peer < P; ++peer)
    if (peer != me)
      for (index_t b = 0; b < B; ++b)
        for (index_t kv = 0; kv < Hkv; ++kv)
          for (std::size_t s = 0; s < mine.size(); ++s)
            totals.blocks_skipped += blocks_left_out(mine[s], ring.send_hull[ring.at(peer, b, kv, s)],
                                                     ring.send[ring.at(peer, b, kv, s)]);
  if (stats != nullptr) *stats = totals;
}

}  // namespace mpi
}  // namespace detail
}  // namespace alibi
