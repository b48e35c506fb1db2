#pragma once
// The one small collective every distributed call opens with: each rank checks its own
// arguments, then all ranks gather what each saw (its length, sizes, params and, if it failed,
// its message). Every rank then throws the same std::invalid_argument when any rank failed or
// two ranks disagree, so bad input never leaves a rank waiting for a message that won't come.

#include <mpi.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../params.hpp"

namespace alibi {
namespace detail {
namespace mpi {

/// What a rank says about its arguments: fixed size, sent as bytes.
struct CallHeader {
  std::int64_t ok = 0;
  std::int64_t length = 0;  // this rank's tokens
  std::int64_t queries = 0;  // decode: query rows per batch row (the same on every rank)
  std::int64_t batch = 0, heads_q = 0, heads_kv = 0, head_dim = 0, value_dim = 0;
  std::int64_t window_left = 0, window_right = 0, causal = 0, layout = 0, element_size = 0;
  std::int64_t slope_count = 0;
  std::int64_t wants_slope_gradient = 0;  // backward: dslopes not null
  std::uint64_t slope_hash = 0;
  std::int64_t sink_count = 0;
  std::uint64_t sink_hash = 0;
  double scale = 0, tail_tolerance = 0;
  char message[256] = {};
};

/// FNV-1a over the bytes of the slopes: ranks agree on them iff the hashes agree (in practice).
inline std::uint64_t hash_floats(const std::vector<float>& values) {
  std::uint64_t h = 1469598103934665603ull;
  for (float x : values) {
    unsigned char bytes[sizeof(float)];
    std::memcpy(bytes, &x, sizeof(float));
    for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  }
  return h;
}

/// The header of a call whose local checks passed, from its sizes and params.
inline CallHeader describe_call(index_t length, index_t batch, index_t heads_q, index_t heads_kv,
                                index_t head_dim, index_t value_dim, const Params& p, int layout,
                                std::size_t element_size) {
  CallHeader h;
  h.ok = 1;
  h.length = length;
  h.batch = batch;
  h.heads_q = heads_q;
  h.heads_kv = heads_kv;
  h.head_dim = head_dim;
  h.value_dim = value_dim;
  h.window_left = p.window_left;
  h.window_right = p.window_right;
  h.causal = p.causal;
  h.layout = layout;
  h.element_size = std::int64_t(element_size);
  h.slope_count = std::int64_t(p.slopes.size());
  h.slope_hash = hash_floats(p.slopes);
  h.sink_count = std::int64_t(p.sink_logits.size());
  h.sink_hash = hash_floats(p.sink_logits);
  h.scale = p.scale;
  h.tail_tolerance = p.tail_tolerance;
  return h;
}

/// Runs `check` (which returns this rank's header or throws std::invalid_argument), gathers
/// every rank's header and returns them all when every rank passed and all agree; otherwise
/// throws on every rank. `fn` names the call in the messages.
template <class Check>
std::vector<CallHeader> agree(const char* fn, MPI_Comm comm, Check&& check) {
  CallHeader mine;
  try {
    mine = check();
  } catch (const std::invalid_argument& e) {
    mine = CallHeader{};
    std::strncpy(mine.message, e.what(), sizeof(mine.message) - 1);
  }
  int ranks = 0;
  MPI_Comm_size(comm, &ranks);
  std::vector<CallHeader> all(static_cast<std::size_t>(ranks));
  MPI_Allgather(&mine, int(sizeof(CallHeader)), MPI_BYTE, all.data(), int(sizeof(CallHeader)),
                MPI_BYTE, comm);
  for (int r = 0; r < ranks; ++r)
    if (!all[std::size_t(r)].ok)
      throw std::invalid_argument(std::string(fn) + ": rank " + std::to_string(r) + ": " +
                                  all[std::size_t(r)].message);
  const CallHeader& first = all[0];
  for (int r = 1; r < ranks; ++r) {
    const CallHeader& h = all[std::size_t(r)];
    const auto disagree = [&](const char* what, const std::string& a, const std::string& b) {
      throw std::invalid_argument(std::string(fn) + ": ranks disagree on " + what + ": rank 0 has " +
                                  a + ", rank " + std::to_string(r) + " has " + b);
    };
    const struct {
      const char* name;
      std::int64_t a, b;
    } sizes[] = {{"the batch", first.batch, h.batch},
                 {"the query heads", first.heads_q, h.heads_q},
                 {"the kv heads", first.heads_kv, h.heads_kv},
                 {"the query rows", first.queries, h.queries},
                 {"head_dim", first.head_dim, h.head_dim},
                 {"the value dim", first.value_dim, h.value_dim},
                 {"the element size", first.element_size, h.element_size},
                 {"params.causal", first.causal, h.causal},
                 {"params.window_left", first.window_left, h.window_left},
                 {"params.window_right", first.window_right, h.window_right},
                 {"the layout", first.layout, h.layout},
                 {"the number of params.slopes", first.slope_count, h.slope_count},
                 {"whether dslopes is wanted", first.wants_slope_gradient,
                  h.wants_slope_gradient}};
    for (const auto& s : sizes)
      if (s.a != s.b) disagree(s.name, std::to_string(s.a), std::to_string(s.b));
    if (first.slope_hash != h.slope_hash) disagree("params.slopes", "one set", "another");
    if (first.sink_count != h.sink_count || first.sink_hash != h.sink_hash)
      disagree("params.sink_logits", std::to_string(first.sink_count) + " values",
               std::to_string(h.sink_count) + " other values");
    if (first.scale != h.scale)
      disagree("params.scale", std::to_string(first.scale), std::to_string(h.scale));
    if (first.tail_tolerance != h.tail_tolerance)
      disagree("params.tail_tolerance", std::to_string(first.tail_tolerance),
               std::to_string(h.tail_tolerance));
  }
  return all;
}

}  // namespace mpi
}  // namespace detail
}  // namespace alibi
