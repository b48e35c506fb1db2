#pragma once

/// The library's version; CMake reads these three lines.
#define ALIBI_VERSION_MAJOR 0
#define ALIBI_VERSION_MINOR 1
#define ALIBI_VERSION_PATCH 0

/// Major * 10000 + minor * 100 + patch, for `#if ALIBI_VERSION >= 100`.
#define ALIBI_VERSION \
  (ALIBI_VERSION_MAJOR * 10000 + ALIBI_VERSION_MINOR * 100 + ALIBI_VERSION_PATCH)
