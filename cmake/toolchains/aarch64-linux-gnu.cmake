# Cross-compiles for 64-bit ARM with Debian's g++-aarch64-linux-gnu and runs what it builds (the
# tests, and the test discovery) under qemu-user with that compiler's sysroot: the NEON path
# (4 lanes, 32 registers) of Eigen's packets on an x86 machine. Header-only packages (Eigen,
# Catch2) come from the host.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(alibi_aarch64_sysroot /usr/aarch64-linux-gnu)
find_program(alibi_qemu_aarch64 NAMES qemu-aarch64-static qemu-aarch64 REQUIRED)
set(CMAKE_CROSSCOMPILING_EMULATOR "${alibi_qemu_aarch64};-L;${alibi_aarch64_sysroot}")
