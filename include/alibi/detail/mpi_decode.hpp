#pragma once
// Sharded decode: each rank holds a contiguous range of a cache's positions, q is broadcast from
// rank 0, and every rank attends its range in pieces: the cache's positions are cut at multiples
// of decode_piece, and each piece (a cut chunk inside one rank's range) is one alibi::attention
// call. All pieces' partials are gathered on every rank and merged in position order, in double:
// the same operations in the same order whatever the number of ranks, so for rank boundaries on
// multiples of decode_piece the result is bitwise the same for any P (and on every rank).

#include <mpi.h>

#include <algorithm>
#include <vector>

#include "mpi_agree.hpp"
#include "mpi_ring.hpp"

namespace alibi {
namespace detail {
namespace mpi {

/// Positions per piece of a sharded decode step: fixed, so that the pieces (and the result) do
/// not depend on the number of ranks.
constexpr index_t decode_piece = 4096;

template <class T, class StatsT>
void sharded_decode(MPI_Comm user_comm, TensorView<const T> q, TensorView<const T> k,
                    TensorView<const T> v, TensorView<T> out, const Params& params, float* lse,
                    StatsT* stats) {
  const char* fn = "alibi::mpi::decode";
  const std::vector<CallHeader> headers = agree(fn, user_comm, [&] {
    if (params.query_offset || params.key_offset)
      fail(fn, "params.query_offset and key_offset are set from the ranks' lengths; leave them "
               "unset");
    if (!params.seqlens_k.empty() || !params.seqlens_q.empty())
      fail(fn, "params.seqlens_k and seqlens_q are not supported (each rank's range is all valid)");
    validate_forward(fn, q, k, v, out, params, lse);
    CallHeader h = describe_call(k.seq(), q.batch(), q.heads(), k.heads(), q.head_dim(),
                                 v.head_dim(), params, 0, sizeof(T));
    h.queries = q.seq();
    return h;
  });
  check_total(fn, headers);
  const OwnComm own(user_comm);
  const MPI_Comm comm = own.get();
  int me = 0, P = 1;
  MPI_Comm_rank(comm, &me);
  MPI_Comm_size(comm, &P);
  const index_t B = q.batch(), Sq = q.seq(), Hq = q.heads(), D = q.head_dim(), Dv = v.head_dim();
  index_t begin = 0, total = 0;
  for (int r = 0; r < P; ++r) {
    if (r == me) begin = total;
    total += headers[std::size_t(r)].length;
  }

  // q from rank 0, contiguous.
  std::vector<T> queries(std::size_t(B * Sq * Hq * D));
  if (me == 0)
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 0; i < Sq; ++i)
        for (index_t h = 0; h < Hq; ++h)
          for (index_t d = 0; d < D; ++d) queries[std::size_t(((b * Sq + i) * Hq + h) * D + d)] = q(b, i, h, d);
  const std::size_t q_bytes = queries.size() * sizeof(T);
  for (std::size_t done = 0; done < q_bytes; done += max_piece)
    MPI_Bcast(reinterpret_cast<char*>(queries.data()) + done, int(std::min(max_piece, q_bytes - done)),
              MPI_BYTE, 0, comm);
  const TensorView<const T> qv = make_view<const T>(queries.data(), B, Sq, Hq, D);

  // This rank's pieces, each [B, Sq, Hq, Dv] in float then its lse [B, Hq, Sq].
  const index_t part = B * Sq * Hq * Dv + B * Hq * Sq;
  const auto pieces_of = [&](index_t from, index_t length) {
    if (length <= 0) return index_t(0);
    return (from + length - 1) / decode_piece - from / decode_piece + 1;
  };
  const index_t n = k.seq(), count = pieces_of(begin, n);
  std::vector<float> partials(std::size_t(count * part));
  std::vector<T> piece_out(std::size_t(B * Sq * Hq * Dv));
  // The sinks join the last piece of the whole cache only (held by the last non-empty rank).
  int last_holder = -1;
  for (int r = 0; r < P; ++r)
    if (headers[std::size_t(r)].length > 0) last_holder = r;
  AttentionStats visited;
  for (index_t c = 0; c < count; ++c) {
    const index_t first = std::max(begin, (begin / decode_piece + c) * decode_piece);
    const index_t last = std::min(begin + n, (begin / decode_piece + c + 1) * decode_piece);
    Params p = params;
    p.query_offset = total - Sq;
    p.key_offset = first;
    if (!(me == last_holder && c == count - 1)) p.sink_logits.clear();
    AttentionStats s;
    p.stats = &s;
    float* dst = partials.data() + c * part;
    alibi::attention<T>(qv, tokens(k, first - begin, last - first), tokens(v, first - begin, last - first),
                        make_view(piece_out.data(), B, Sq, Hq, Dv), p, dst + B * Sq * Hq * Dv);
    for (std::size_t e = 0; e < piece_out.size(); ++e) dst[e] = float(piece_out[e]);
    visited.keys_visited += s.keys_visited;
    visited.keys_allowed += s.keys_allowed;
  }

  // Every rank's pieces, in rank (so position) order.
  std::vector<int> counts(static_cast<std::size_t>(P)), displs(counts);
  index_t all = 0;
  for (int r = 0; r < P; ++r) {
    index_t from = 0;
    for (int s = 0; s < r; ++s) from += headers[std::size_t(s)].length;
    const index_t c = pieces_of(from, headers[std::size_t(r)].length);
    counts[std::size_t(r)] = int(c * part);
    displs[std::size_t(r)] = int(all * part);
    all += c;
  }
  std::vector<float> gathered(std::size_t(all * part));
  MPI_Allgatherv(partials.data(), int(partials.size()), MPI_FLOAT, gathered.data(), counts.data(),
                 displs.data(), MPI_FLOAT, comm);

  RowAccumulator acc(B, Sq, Hq, Dv);
  for (index_t c = 0; c < all; ++c) {
    const float* x = gathered.data() + c * part;
    const float* x_lse = x + B * Sq * Hq * Dv;
    for (index_t b = 0; b < B; ++b)
      acc.merge(b, 0, Sq, 0, Hq, x + b * Sq * Hq * Dv, x_lse + b * Hq * Sq);
  }
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < Sq; ++i)
      for (index_t h = 0; h < Hq; ++h) {
        const double* src = acc.out.data() + ((b * Sq + i) * Hq + h) * Dv;
        T* dst = out.row(b, i, h);
        for (index_t d = 0; d < Dv; ++d) dst[d * out.strides[3]] = T(src[d]);
      }
  if (lse != nullptr)
    for (std::size_t i = 0; i < acc.lse.size(); ++i) lse[i] = float(acc.lse[i]);
  if (stats != nullptr) {
    StatsT moved{};
    moved.bytes_sent = std::int64_t(partials.size() * sizeof(float)) * (P - 1) +
                       (me == 0 ? std::int64_t(q_bytes) * (P - 1) : 0);
    moved.bytes_received = std::int64_t((gathered.size() - partials.size()) * sizeof(float)) +
                           (me == 0 ? 0 : std::int64_t(q_bytes));
    *stats = moved;
  }
  if (params.stats != nullptr) *params.stats = visited;
}

}  // namespace mpi
}  // namespace detail
}  // namespace alibi
