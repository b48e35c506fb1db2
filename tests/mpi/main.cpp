// Catch2 inside MPI: every rank runs the whole suite; the calls under test are collective.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <mpi.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const int failed = Catch::Session().run(argc, argv);
  MPI_Finalize();
  return failed;
}
