#pragma once
// Packets of the accumulation type from narrower stored elements, converted in registers:
// Eigen's packet casts for half and bfloat16 (F16C / AVX-512 conversions, a shift for bfloat16),
// and for int8 the one widening Eigen does not have, behind this header with a portable fallback.

#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

namespace alibi {
namespace detail {

// Eigen 3.4's half2float packets use F16C only where it defines EIGEN_HAS_FP16_C, which its
// test of the compiler leaves undefined under GCC: there they convert a lane at a time through
// the scalar bit arithmetic (measured: a half decode step 4x slower than float). Hence the
// conversions themselves, where the compiler targets F16C.
#if defined(EIGEN_VECTORIZE_AVX512)
inline Eigen::internal::Packet16f half_to_float16(const Eigen::half* src) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)));
}
#endif
#if defined(EIGEN_VECTORIZE_AVX)
inline Eigen::internal::Packet8f half_to_float8(const Eigen::half* src) {
#if defined(__F16C__)
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
#else
  return Eigen::internal::half2float(Eigen::internal::ploadu<Eigen::internal::Packet8h>(src));
#endif
}
#endif

/// `unpacket_traits<Packet>::size` elements of `T` (Eigen::half, Eigen::bfloat16, std::int8_t)
/// from `src`, as one packet of float.
template <class Packet, class T>
Packet load_as_float(const T* src) {
  using namespace Eigen::internal;
  constexpr int width = unpacket_traits<Packet>::size;
  using Scalar [[maybe_unused]] = typename unpacket_traits<Packet>::type;  // x86 branches only
#if defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (width == 16 && std::is_same<Scalar, float>::value) {
    if constexpr (std::is_same<T, Eigen::half>::value) return half_to_float16(src);
    if constexpr (std::is_same<T, Eigen::bfloat16>::value)
      return Bf16ToF32(ploadu<Packet16bf>(src));
    if constexpr (std::is_same<T, std::int8_t>::value)
      return _mm512_cvtepi32_ps(
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src))));
  }
#endif
#if defined(EIGEN_VECTORIZE_AVX)
  if constexpr (width == 8 && std::is_same<Scalar, float>::value) {
    if constexpr (std::is_same<T, Eigen::half>::value) return half_to_float8(src);
    if constexpr (std::is_same<T, Eigen::bfloat16>::value) return Bf16ToF32(ploadu<Packet8bf>(src));
#if defined(EIGEN_VECTORIZE_AVX2)
    if constexpr (std::is_same<T, std::int8_t>::value)
      return _mm256_cvtepi32_ps(
          _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src))));
#endif
  }
#endif
  // Elsewhere (SSE, NEON, scalar builds): element by element through a small buffer.
  EIGEN_ALIGN_MAX float lanes[width];
  for (int i = 0; i < width; ++i) lanes[i] = float(src[i]);
  return pload<Packet>(lanes);
}

}  // namespace detail
}  // namespace alibi
