// alibi::build_info names what this build's kernels use: the instruction set the compiler was
// given, the vector width the kernels tile by, the threading.
#include <alibi/alibi.hpp>

#include <catch2/catch.hpp>

#include <string>

TEST_CASE("build_info names the version, instruction set, vector width and threading",
          "[build_info]") {
  const std::string info = alibi::build_info();
  INFO(info);
  REQUIRE(info.rfind("alibi " + std::to_string(ALIBI_VERSION_MAJOR) + ".", 0) == 0);
  const int width = alibi::detail::kernel_traits<float>::width;
  REQUIRE(info.find(std::to_string(width * 32) + "-bit vectors (" + std::to_string(width) +
                    " floats)") != std::string::npos);
#if defined(__AVX512F__)
  REQUIRE(info.find("AVX-512") != std::string::npos);
#elif defined(__AVX2__)
  REQUIRE(info.find("AVX2") != std::string::npos);
#elif defined(__ARM_NEON)
  REQUIRE(info.find("NEON") != std::string::npos);
#endif
#ifdef _OPENMP
  REQUIRE(info.find("OpenMP") != std::string::npos);
#else
  REQUIRE(info.find("std::thread") != std::string::npos);
#endif
  // A build that uses the CPU's widest instruction set says nothing more.
#if defined(__AVX512F__)
  REQUIRE(info.find("unused by this build") == std::string::npos);
#endif
}
