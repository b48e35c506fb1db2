#pragma once
// Runs independent tasks on worker threads: OpenMP when the build has it, std::thread otherwise.
// Every task writes only its own outputs, so results never depend on the thread count.

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <optional>
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

/// The first exception thrown on any worker thread, kept for the calling thread: an exception
/// may not leave an OpenMP region or a std::thread (std::terminate). Once one is caught the
/// remaining tasks are skipped.
class FirstException {
 public:
  template <class F>
  void run(F&& f) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr error_;
};

/// Calls make_worker() once per thread, then worker(task) for tasks 0..n-1 spread over threads.
/// Workers are handed tasks dynamically; a worker keeps its scratch memory across its tasks. An
/// exception from make_worker or a task (std::bad_alloc for scratch) is rethrown here, on the
/// calling thread, once every thread has stopped.
template <class MakeWorker>
void parallel_tasks(index_t n, int requested_threads, MakeWorker&& make_worker) {
  const int threads = thread_count(requested_threads, n);
  if (threads <= 1) {
    auto worker = make_worker();
    for (index_t task = 0; task < n; ++task) worker(task);
    return;
  }
  FirstException error;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  {
    using Worker = decltype(make_worker());
    std::optional<Worker> worker;
    error.run([&] { worker.emplace(make_worker()); });
#pragma omp for schedule(dynamic, 1)
    for (index_t task = 0; task < n; ++task)
      if (worker) error.run([&] { (*worker)(task); });
  }
#else
  std::atomic<index_t> next{0};
  auto run = [&] {
    error.run([&] {
      auto worker = make_worker();
      for (index_t task = next++; task < n && !error.failed(); task = next++) worker(task);
    });
  };
  std::vector<std::thread> pool;
  error.run([&] {
    for (int t = 1; t < threads; ++t) pool.emplace_back(run);  // may throw std::system_error
  });
  run();
  for (auto& thread : pool) thread.join();
#endif
  error.rethrow();
}

}  // namespace detail
}  // namespace alibi
