// README, "Across machines (MPI)": each rank holds a slice of one sequence; the forward, the
// backward and a decode step against the sharded cache are checked on every rank against
// single-process alibi calls over the whole sequence (which every rank can rebuild: the data
// comes from one seed). Built only where MPI is found; ctest runs it on 2 ranks.
#include <alibi/alibi.hpp>
#include <alibi/mpi.hpp>

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "batches.hpp"

namespace {
using readme::normal_values;

// The largest |a - b| over `n` elements of b starting at `offset` (a holds only those).
float max_diff(const std::vector<float>& a, const std::vector<float>& b, std::size_t offset) {
  float worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[offset + i]));
  return worst;
}
}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  using alibi::index_t;
  const index_t H = 4, D = 32, n = 96, S = n * ranks;  // n tokens per rank
  const std::size_t row = std::size_t(H) * D, mine = std::size_t(rank) * n * row;
  const std::vector<float> qa = normal_values(S * row, 1), ka = normal_values(S * row, 2),
                           va = normal_values(S * row, 3), da = normal_values(S * row, 4),
                           qn = normal_values(row, 5);
  const auto whole = [&](const std::vector<float>& x) {
    return alibi::make_view(x.data(), 1, S, H, D);
  };
  const auto slice = [&](const std::vector<float>& x) {
    return std::vector<float>(x.begin() + long(mine), x.begin() + long(mine + n * row));
  };
  const std::vector<float> lq = slice(qa), lk = slice(ka), lv = slice(va), ld = slice(da);
  std::vector<float> lo(n * row), lg(n * row), lgq(n * row), lgk(n * row), lgv(n * row),
      so(row), lse_local(std::size_t(H) * n);
  const auto q = alibi::make_view(lq.data(), 1, n, H, D);
  const auto k = alibi::make_view(lk.data(), 1, n, H, D), my_k = k;
  const auto v = alibi::make_view(lv.data(), 1, n, H, D), my_v = v;
  const auto out = alibi::make_view(lo.data(), 1, n, H, D);
  const auto dout = alibi::make_view(ld.data(), 1, n, H, D);
  const auto dq = alibi::make_view(lgq.data(), 1, n, H, D);
  const auto dk = alibi::make_view(lgk.data(), 1, n, H, D);
  const auto dv = alibi::make_view(lgv.data(), 1, n, H, D);
  const auto q_new = alibi::make_view(qn.data(), 1, 1, H, D);
  const auto step_out = alibi::make_view(so.data(), 1, 1, H, D);
  std::vector<float>& lse = lse_local;
  const alibi::Params params;  // causal, slopes(H)
  // [readme]
  alibi::mpi::Stats moved;   // bytes_sent, bytes_received, blocks_skipped (this rank's)
  alibi::mpi::attention(MPI_COMM_WORLD, q, k, v, out, params, lse.data(), &moved);     // my rows
  alibi::mpi::attention_backward(MPI_COMM_WORLD, q, k, v, out, dout, lse.data(), dq, dk, dv, params);
  alibi::mpi::decode(MPI_COMM_WORLD, q_new, my_k, my_v, step_out, params);   // the next token
  // [/readme]

  // The same over the whole sequence in one process.
  std::vector<float> o(S * row), lse_all(std::size_t(H) * S), gq(S * row), gk(S * row),
      gv(S * row), step(row);
  alibi::attention<float>(whole(qa), whole(ka), whole(va), alibi::make_view(o.data(), 1, S, H, D),
                          params, lse_all.data());
  alibi::attention_backward<float>(
      whole(qa), whole(ka), whole(va), whole(o), whole(da), lse_all.data(),
      alibi::make_view(gq.data(), 1, S, H, D), alibi::make_view(gk.data(), 1, S, H, D),
      alibi::make_view(gv.data(), 1, S, H, D), params);
  alibi::attention<float>(q_new, whole(ka), whole(va), alibi::make_view(step.data(), 1, 1, H, D),
                          params);
  const float forward = max_diff(lo, o, mine);
  const float backward =
      std::max({max_diff(lgq, gq, mine), max_diff(lgk, gk, mine), max_diff(lgv, gv, mine)});
  const float decoded = max_diff(so, step, 0);
  const bool ok = forward < 1e-5f && backward < 1e-4f && decoded < 1e-5f;
  std::printf("rank %d of %d: out %.2g, gradients %.2g, decode step %.2g off the single process; "
              "%.0f bytes sent%s\n",
              rank, ranks, double(forward), double(backward), double(decoded),
              double(moved.bytes_sent), ok ? "" : "  FAILED");
  int all_ok = ok ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  MPI_Finalize();
  return all_ok ? 0 : 1;
}
