// Built (not run: it needs mpirun) when the installed package provides alibi::mpi: its include
// path and MPI link line reach a consumer.
#include <alibi/mpi.hpp>

#include <mpi.h>

#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const alibi::index_t seq = 8, heads = 2, dim = 16;
  std::vector<float> x(seq * heads * dim, 0.5f), out(x.size());
  const auto in = alibi::make_view(x.data(), 1, seq, heads, dim);
  alibi::mpi::attention<float>(MPI_COMM_WORLD, in, in, in,
                               alibi::make_view(out.data(), 1, seq, heads, dim));
  MPI_Finalize();
  return 0;
}
