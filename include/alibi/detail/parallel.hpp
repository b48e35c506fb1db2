#pragma once
// Runs independent tasks on worker threads: OpenMP when the build has it, std::thread otherwise.
// Every task writes only its own outputs, so results never depend on the thread count.

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../tensor_view.hpp"

namespace alibi {
namespace detail {

/// Threads for a call: `requested`, or all of them when 0; 1 inside an enclosing parallel region
/// so that a caller which is already parallel is not oversubscribed.
inline int thread_count(int requested, index_t tasks) {
  int available;
#ifdef _OPENMP
  if (omp_in_parallel()) return 1;
  available = omp_get_max_threads();
#else
  available = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#endif
  const int wanted = requested > 0 ? requested : available;
  return static_cast<int>(std::max<index_t>(1, std::min<index_t>(wanted, tasks)));
}

/// Calls make_worker() once per thread, then worker(task) for tasks 0..n-1 spread over threads.
/// Workers are handed tasks dynamically; a worker keeps its scratch memory across its tasks.
template <class MakeWorker>
void parallel_tasks(index_t n, int requested_threads, MakeWorker&& make_worker) {
  const int threads = thread_count(requested_threads, n);
  if (threads <= 1) {
    auto worker = make_worker();
    for (index_t task = 0; task < n; ++task) worker(task);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    auto worker = make_worker();
#pragma omp for schedule(dynamic, 1)
    for (index_t task = 0; task < n; ++task) worker(task);
  }
#else
  std::atomic<index_t> next{0};
  auto run = [&] {
    auto worker = make_worker();
    for (index_t task = next++; task < n; task = next++) worker(task);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(run);
  run();
  for (auto& thread : pool) thread.join();
#endif
}

}  // namespace detail
}  // namespace alibi
