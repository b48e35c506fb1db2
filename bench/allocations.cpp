// Counts the bytes live in operator new allocations, so each case can report the extra memory
// its call took (the fused kernel's O(tile) scratch against the materialised S^2 matrices).
#include <atomic>
#include <cstdlib>
#include <new>

#include "support.hpp"

namespace {

std::atomic<std::size_t> live{0}, peak{0};

// Each block starts with a header holding its size, padded to the alignment asked for.
void* allocate(std::size_t size, std::size_t alignment) {
  const std::size_t header =
      alignment < sizeof(std::max_align_t) ? sizeof(std::max_align_t) : alignment;
  void* base = nullptr;
  if (posix_memalign(&base, header < sizeof(void*) ? sizeof(void*) : header, size + header) != 0)
    throw std::bad_alloc();
  auto* user = static_cast<unsigned char*>(base) + header;
  reinterpret_cast<std::size_t*>(user)[-1] = size;
  reinterpret_cast<std::size_t*>(user)[-2] = header;
  const std::size_t now = live += size;
  std::size_t seen = peak.load();
  while (now > seen && !peak.compare_exchange_weak(seen, now)) {
  }
  return user;
}

void release(void* p) {
  if (p == nullptr) return;
  auto* user = static_cast<unsigned char*>(p);
  live -= reinterpret_cast<std::size_t*>(user)[-1];
  std::free(user - reinterpret_cast<std::size_t*>(user)[-2]);
}

}  // namespace

void* operator new(std::size_t size) { return allocate(size, alignof(std::max_align_t)); }
void* operator new[](std::size_t size) { return allocate(size, alignof(std::max_align_t)); }
void* operator new(std::size_t size, std::align_val_t a) {
  return allocate(size, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t size, std::align_val_t a) {
  return allocate(size, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { release(p); }

namespace alibi_bench {
std::size_t allocated_bytes() { return live.load(); }
std::size_t peak_allocated_bytes() { return peak.load(); }
void reset_peak() { peak.store(live.load()); }
}  // namespace alibi_bench
