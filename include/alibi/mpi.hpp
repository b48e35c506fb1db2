#pragma once
// alibi/mpi.hpp: context-parallel ALiBi attention over MPI (CMake target alibi::mpi). Each rank
// holds a slice of the sequence; key/value blocks go to the ranks that need them and partial
// results merge through their lse (ring attention). ALiBi adds one thing: a block whose tail
// bound says it cannot matter to any receiving row is never sent. The schedule and the merge:
// detail/mpi_ring.hpp; which keys are needed: detail/mpi_plan.hpp.

#include <mpi.h>

#include <cstdint>

#include "detail/mpi_ring.hpp"
#include "detail/mpi_decode.hpp"
#include "detail/mpi_ring_backward.hpp"
#include "params.hpp"
#include "tensor_view.hpp"

namespace alibi {
namespace mpi {

/// What one distributed call moved, for this rank: bytes of keys and values (and, backward, their
/// gradients) it sent and received in point-to-point messages (the few small collectives that
/// plan a call, O(P B H) values, are not counted), and the 64-key blocks, per (batch row, kv
/// head, receiver), it did not send because the tail bound said they could not matter (blocks
/// the mask excludes are never counted: they are never needed).
struct Stats {
  std::int64_t bytes_sent = 0, bytes_received = 0, blocks_skipped = 0;
};

/// How the sequence lies over the ranks. contiguous: rank r holds the r-th slice. zigzag: each
/// rank's first half is the r-th of 2P chunks and its second half the (2P - 1 - r)-th, so that
/// under a causal mask every rank has a near and a far part (the load-balanced layout; with the
/// tail skip a causal contiguous layout is already balanced, each row reaching O(1/m) keys).
enum class Layout { contiguous, zigzag };

/// Distributed alibi::attention. On each rank q, k, v and out are its slice [B, n_r, H, D] of
/// the sequence (the same n_r tokens' queries, keys and values; n_r may differ between ranks and
/// be 0); rank r's tokens sit at positions following the lengths of the ranks before it (for
/// Layout::zigzag, see Layout). The result on each rank is its rows of single-process
/// alibi::attention over the whole sequence, for causal and bidirectional masks, windows, GQA and
/// per-(batch, head) slopes; lse ([B, H, n_r], optional) likewise. Collective over `comm`: every
/// rank calls it with the same B, heads, head_dim, params (except num_threads and stats, which
/// are local) and layout.
///
/// With params.tail_tolerance > 0, ranks first exchange each slice's per-block key-norm maxima
/// and summaries of their rows, and a block is not sent where the tail bound says it cannot
/// matter to any receiving row (half the tolerance for what is not sent, half for the local
/// calls' own skip). 0 sends every block the mask allows. params.stats, when set, receives the
/// keys visited and allowed summed over this rank's local calls; `stats` what it moved.
///
/// Throws std::invalid_argument on every rank (agreed through one small allgather, never a
/// hang) when any rank's arguments are invalid (as alibi::attention checks them; also set
/// query_offset, key_offset or seqlens_k, or q and k of different lengths) or the ranks disagree
/// on sizes, params or the layout.
///
///     alibi::mpi::Stats moved;
///     alibi::mpi::attention(MPI_COMM_WORLD, q, k, v, out, {}, lse.data(), &moved);
template <class T>
void attention(MPI_Comm comm, TensorView<const detail::nondeduced<T>> q,
               TensorView<const detail::nondeduced<T>> k, TensorView<const detail::nondeduced<T>> v,
               TensorView<T> out, const Params& params = {}, float* lse = nullptr,
               Stats* stats = nullptr, Layout layout = Layout::contiguous) {
  static_assert(detail::is_element<T>::value,
                "alibi::mpi::attention: T must be float, double, Eigen::half or Eigen::bfloat16");
  detail::mpi::ring_forward<T, Stats>(comm, q, k, v, out, params, lse, stats,
                                      layout == Layout::zigzag ? detail::mpi::LayoutKind::zigzag
                                                               : detail::mpi::LayoutKind::contiguous);
}

/// Distributed alibi::attention_backward, with the local arguments of alibi::attention_backward:
/// each rank passes its slice of q, k, v, the forward's out and lse (as alibi::mpi::attention
/// returned them), dout, and receives its slice of dq, dk and dv (the gradients of its own
/// tokens: the dk and dv other ranks computed for its keys come back to it) and, when dslopes is
/// not null (on every rank or none), the whole dL/dm summed over all ranks. Same layout, params
/// and skipping as the forward (the cut uses the true lse as each row's bound); `stats` counts
/// keys and values sent plus the gradients returned. Throws on every rank like
/// alibi::mpi::attention.
template <class T>
void attention_backward(MPI_Comm comm, TensorView<const detail::nondeduced<T>> q,
                        TensorView<const detail::nondeduced<T>> k,
                        TensorView<const detail::nondeduced<T>> v,
                        TensorView<const detail::nondeduced<T>> out,
                        TensorView<const detail::nondeduced<T>> dout, const float* lse,
                        TensorView<T> dq, TensorView<T> dk, TensorView<T> dv,
                        const Params& params = {}, float* dslopes = nullptr,
                        Stats* stats = nullptr, Layout layout = Layout::contiguous) {
  static_assert(detail::is_element<T>::value,
                "alibi::mpi::attention_backward: T must be float, double, Eigen::half or "
                "Eigen::bfloat16");
  detail::mpi::ring_backward<T, Stats>(comm, q, k, v, out, dout, lse, dq, dk, dv, params, dslopes,
                                       stats,
                                       layout == Layout::zigzag ? detail::mpi::LayoutKind::zigzag
                                                                : detail::mpi::LayoutKind::contiguous);
}

/// Positions per piece of a sharded decode step (see mpi::decode).
constexpr index_t decode_piece = detail::mpi::decode_piece;

/// One decode step against a cache sharded over the ranks: rank r holds k and v [B, n_r, Hkv, D]
/// of the positions following the ranks before it (n_r may be 0); q [B, Sq, Hq, D] is read on
/// rank 0 and broadcast (the other ranks pass a view of the same shape, whose data is not read);
/// the queries sit at the last Sq positions of the whole cache (bottom-right, as a single-process
/// decode step). Every rank receives the whole out [B, Sq, Hq, Dv] and lse [B, Hq, Sq]. Each rank
/// attends its range in pieces cut at multiples of decode_piece positions; the pieces' partials
/// are gathered and merged in position order in double, so the result is the same on every rank
/// and, when the ranks' boundaries fall on multiples of decode_piece, bitwise the same for any
/// number of ranks. `stats` counts the bytes the broadcast and the gather move for this rank.
/// Throws on every rank like alibi::mpi::attention (also when the ranks disagree on Sq).
template <class T>
void decode(MPI_Comm comm, TensorView<const detail::nondeduced<T>> q,
            TensorView<const detail::nondeduced<T>> k, TensorView<const detail::nondeduced<T>> v,
            TensorView<T> out, const Params& params = {}, float* lse = nullptr,
            Stats* stats = nullptr) {
  static_assert(detail::is_element<T>::value,
                "alibi::mpi::decode: T must be float, double, Eigen::half or Eigen::bfloat16");
  detail::mpi::sharded_decode<T, Stats>(comm, q, k, v, out, params, lse, stats);
}

}  // namespace mpi
}  // namespace alibi
