#pragma once
// Scratch memory of the kernels: vectors aligned for the widest packet, allocated through the
// global aligned operator new (so a program that counts its allocations sees them).

#include <cstddef>
#include <new>
#include <vector>

namespace alibi {
namespace detail {

constexpr std::size_t scratch_alignment = 64;

template <class T>
struct ScratchAllocator {
  using value_type = T;
  ScratchAllocator() = default;
  template <class U>
  ScratchAllocator(const ScratchAllocator<U>&) {}  // NOLINT: rebinding is implicit by design
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(scratch_alignment)));
  }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(scratch_alignment)); }
  template <class U>
  bool operator==(const ScratchAllocator<U>&) const {
    return true;
  }
  template <class U>
  bool operator!=(const ScratchAllocator<U>&) const {
    return false;
  }
};

/// A 64-byte aligned vector: every row of a packed tile starts on a packet boundary when the
/// row length is a multiple of the packet width.
template <class T>
using scratch_vector = std::vector<T, ScratchAllocator<T>>;

}  // namespace detail
}  // namespace alibi
