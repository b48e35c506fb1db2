#pragma once
// The headline's reporter: one line per case (the median of its repetitions) with its counters
// in plain units, then a summary of what the README's claims rest on: fused against the
// materialised attention, the fraction of the FMA peak, the decode tail skip against the dense
// walk, and the build's instruction set.

#include <alibi/build_info.hpp>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace alibi_bench {

class HeadlineReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context& context) override {
    std::printf("%d CPUs at %.0f MHz; %s\n\n", context.cpu_info.num_cpus,
                context.cpu_info.cycles_per_second / 1e6, alibi::build_info().c_str());
    std::fflush(stdout);
    return true;
  }

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      // The median of the repetitions, or the run itself when there is only one.
      if (run.run_type == Run::RT_Aggregate && run.aggregate_name != "median") continue;
      if (run.run_type == Run::RT_Iteration && run.repetitions > 1) continue;
      if (run.error_occurred) continue;
      const std::string name = case_name(run);
      Case c;
      c.milliseconds = run.GetAdjustedRealTime() * to_milliseconds(run.time_unit);
      for (const auto& counter : run.counters) c.counters[counter.first] = counter.second.value;
      std::printf("%-58s %10s", name.c_str(), time_string(c.milliseconds).c_str());
      for (const auto& counter : c.counters)
        std::printf("  %s", counter_string(counter.first, counter.second).c_str());
      std::printf("\n");
      std::fflush(stdout);
      cases_[name] = c;
    }
  }

  void Finalize() override {
    std::printf("\nSummary (medians, this machine, this run):\n");
    for (const char* threads : {"1", "2"}) {
      const std::string shape = "/float/S:2048/H:8/Hkv:8/D:64/causal:1/threads:" +
                                std::string(threads);
      const Case* fused = find("fused" + shape);
      const Case* materialised = find("materialised_eigen" + shape);
      if (fused == nullptr || materialised == nullptr) continue;
      std::printf(
          "  fused vs materialised Eigen (S 2048, H 8, D 64, causal, %s thread%s): %.1fx faster, "
          "extra memory %s vs %s\n",
          threads, threads[0] == '1' ? "" : "s", materialised->milliseconds / fused->milliseconds,
          bytes_string(fused->get("extra_bytes")).c_str(),
          bytes_string(materialised->get("extra_bytes")).c_str());
    }
    if (const Case* big = find("fused/float/S:4096/H:32/Hkv:32/D:128/causal:1/threads:2"))
      std::printf(
          "  fused S 4096, H 32, D 128, causal, 2 threads: %.1f GFLOP/s, %.0f%% of this "
          "machine's FMA peak, %.0f%% of Eigen's GEMM\n",
          big->get("GFLOP/s"), 100 * big->get("of_FMA_peak"), 100 * big->get("of_GEMM"));
    for (const auto& entry : cases_) {
      // decode/...:skip:1 against the same case with skip:0.
      const std::string& name = entry.first;
      const std::string::size_type at = name.rfind("/skip:1");
      if (name.rfind("decode", 0) != 0 || at == std::string::npos) continue;
      const Case* dense = find(name.substr(0, at) + "/skip:0" + name.substr(at + 7));
      if (dense == nullptr) continue;
      std::printf("  %s: tail skip %.1fx faster than the dense walk (visits %.2f%% of the keys)\n",
                  name.substr(0, at).c_str(), dense->milliseconds / entry.second.milliseconds,
                  100 * entry.second.get("visited"));
    }
    std::printf("  build: %s\n", alibi::build_info().c_str());
    std::fflush(stdout);
  }

 private:
  struct Case {
    double milliseconds = 0;
    std::map<std::string, double> counters;
    double get(const std::string& key) const {
      const auto it = counters.find(key);
      return it == counters.end() ? 0.0 : it->second;
    }
  };

  const Case* find(const std::string& name) const {
    const auto it = cases_.find(name);
    return it == cases_.end() ? nullptr : &it->second;
  }

  /// The run's name without the real_time and aggregate suffixes.
  static std::string case_name(const Run& run) {
    std::string name = run.run_name.str();
    for (const char* suffix : {"/real_time", "/manual_time"}) {
      const std::string::size_type at = name.rfind(suffix);
      if (at != std::string::npos && at + std::string(suffix).size() == name.size())
        name.erase(at);
    }
    return name;
  }

  static double to_milliseconds(benchmark::TimeUnit unit) {
    switch (unit) {
      case benchmark::kNanosecond: return 1e-6;
      case benchmark::kMicrosecond: return 1e-3;
      case benchmark::kMillisecond: return 1.0;
      default: return 1e3;
    }
  }

  static std::string format(const char* fmt, double x) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, fmt, x);
    return buffer;
  }
  static std::string time_string(double ms) {
    return ms >= 1000 ? format("%.2f s", ms / 1000)
                      : ms >= 1 ? format("%.2f ms", ms) : format("%.1f us", ms * 1000);
  }
  static std::string bytes_string(double bytes) {
    return bytes >= 1 << 20   ? format("%.1f MiB", bytes / (1 << 20))
           : bytes >= 1 << 10 ? format("%.1f KiB", bytes / (1 << 10))
                              : format("%.0f B", bytes);
  }
  static std::string rate_string(double x) {
    return x >= 1e9 ? format("%.2f G", x / 1e9)
           : x >= 1e6 ? format("%.2f M", x / 1e6)
           : x >= 1e3 ? format("%.1f k", x / 1e3)
                      : format("%.1f ", x);
  }
  static std::string counter_string(const std::string& key, double value) {
    if (key == "GFLOP/s") return format("%.1f GFLOP/s", value);
    if (key == "GB/s") return format("%.1f GB/s", value);
    if (key == "tokens/s") return rate_string(value) + "tokens/s";
    if (key == "bytes/s") return format("%.1f GB/s", value / 1e9);
    if (key == "of_FMA_peak") return format("%.0f%% of FMA peak", 100 * value);
    if (key == "of_GEMM") return format("%.0f%% of GEMM", 100 * value);
    if (key == "of_bandwidth") return format("%.0f%% of triad", 100 * value);
    if (key == "visited") return format("%.2f%% of keys visited", 100 * value);
    if (key == "extra_bytes") return "extra " + bytes_string(value);
    return key + " " + format("%.4g", value);
  }

  std::map<std::string, Case> cases_;
};

}  // namespace alibi_bench
