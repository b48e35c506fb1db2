#pragma once
// alibi/mpi.hpp: context-parallel ALiBi attention over MPI (CMake target alibi::mpi). Each rank
// holds a slice of the sequence; key/value blocks go to the ranks that need them and partial
// results merge through their lse (ring attention). ALiBi adds one thing: a block whose tail
// bound says it cannot matter to any receiving row is never sent. The schedule and the merge:
// detail/mpi_ring.hpp; which keys are needed: detail/mpi_plan.hpp.

#include <mpi.h>

#include <cstdint>

#include "detail/mpi_ring.hpp"
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

}  // namespace mpi
}  // namespace alibi
