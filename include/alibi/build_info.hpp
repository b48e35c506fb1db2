#pragma once
// What the kernels of this translation unit were compiled for: the instruction set, the vector
// width, the threading. A header-only library is compiled with its user's flags, and without an
// instruction-set flag (-march=native, or the alibi::native CMake target) x86-64 gets SSE2 only:
// about 2.5x slower on an AVX2 machine, and nothing else says so.

#include <string>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "detail/kernel_traits.hpp"
#include "version.hpp"

// The compile-time note: x86-64 or Arm builds whose kernels get neither AVX2 nor NEON (GCC
// prints it as a note, which -Werror leaves alone; clang would make it a warning, so there the
// check is build_info()). Define ALIBI_NO_ISA_NOTE to silence it in a deliberate baseline build.
#if defined(__GNUC__) && !defined(__clang__) && !defined(ALIBI_NO_ISA_NOTE)
#if (defined(__x86_64__) && !defined(__AVX2__)) || \
    (defined(__aarch64__) && !defined(__ARM_NEON))
#pragma message( \
    "alibi: kernels compiled without AVX2/NEON (baseline vectors); link alibi::native or pass -march=native for the CPU's own instruction set")
#endif
#endif

namespace alibi {
namespace detail {

/// The instruction set the compiler was allowed to use here, widest first.
inline const char* compiled_isa() {
#if defined(__AVX512F__)
  return "AVX-512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "AVX2+FMA";
#elif defined(__AVX2__)
  return "AVX2";
#elif defined(__AVX__)
  return "AVX";
#elif defined(__ARM_FEATURE_SVE)
  return "SVE (kernels use NEON)";
#elif defined(__ARM_NEON)
  return "NEON";
#elif defined(__SSE2__)
  return "SSE2 (x86-64 baseline)";
#else
  return "scalar";
#endif
}

/// What this CPU could run beyond the build's instruction set, or "" (x86 only: elsewhere the
/// build cannot ask at run time).
inline std::string unused_cpu_isa() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#if !defined(__AVX512F__)
  if (__builtin_cpu_supports("avx512f")) return "AVX-512";
#endif
#if !defined(__AVX2__)
  if (__builtin_cpu_supports("avx2")) return "AVX2";
#endif
#endif
  return "";
}

}  // namespace detail

/// One line saying what the fused kernels were compiled for, as this translation unit sees it:
/// library version, instruction set, SIMD vector width in bits and floats, micro-tile, threading
/// (OpenMP and its thread count, or std::thread) and compiler. When the CPU supports a wider
/// instruction set than the build uses, a second sentence says so and how to get it.
///
///     std::puts(alibi::build_info().c_str());
///     // alibi 0.1.0: AVX2+FMA, 256-bit vectors (8 floats), micro-tile 4x3, OpenMP 2 threads, g++ 12
inline std::string build_info() {
  using Traits = detail::kernel_traits<float>;
  std::string s = "alibi " + std::to_string(ALIBI_VERSION_MAJOR) + "." +
                  std::to_string(ALIBI_VERSION_MINOR) + "." + std::to_string(ALIBI_VERSION_PATCH) +
                  ": " + detail::compiled_isa() + ", " + std::to_string(Traits::width * 32) +
                  "-bit vectors (" + std::to_string(Traits::width) + " floats), micro-tile " +
                  std::to_string(Traits::micro_rows) + "x" +
                  std::to_string(Traits::micro_packets) + ", ";
#ifdef _OPENMP
  s += "OpenMP " + std::to_string(omp_get_max_threads()) + " threads";
#else
  s += "std::thread " + std::to_string(std::thread::hardware_concurrency()) + " threads";
#endif
#if defined(__clang__)
  s += ", clang " + std::to_string(__clang_major__);
#elif defined(__GNUC__)
  s += ", g++ " + std::to_string(__GNUC__);
#endif
  const std::string unused = detail::unused_cpu_isa();
  if (!unused.empty())
    s += ". This CPU has " + unused +
         ", unused by this build: link alibi::native or compile with -march=native";
  return s;
}

}  // namespace alibi
