// Counts heap allocations made on threads that opt in, by replacing the global operator new and
// delete, so a test can prove that a real-time path allocates nothing once started.
//
// Include in exactly one source file of a test executable: it defines the replaceable global
// allocation functions. Set `count_allocations_on_this_thread` on the thread to watch.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace twinloop::test_support {
inline thread_local bool count_allocations_on_this_thread = false;
inline std::atomic<std::size_t> allocations{0};

inline void* counted_malloc(std::size_t size) noexcept {
  if (count_allocations_on_this_thread) allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}
}  // namespace twinloop::test_support

// Every non-aligned form is replaced, so that whatever a library allocates with (the standard
// library's temporary buffers use the nothrow form) is freed by the matching function here; a
// sanitizer would otherwise see its own operator new paired with this file's free().
// noinline: GCC would otherwise inline free() next to a new-expression elsewhere and report a
// mismatched new/delete pair (-Wmismatched-new-delete), not knowing new is malloc here.
[[gnu::noinline]] void* operator new(std::size_t size) {
  if (void* p = twinloop::test_support::counted_malloc(size)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new[](std::size_t size) {
  if (void* p = twinloop::test_support::counted_malloc(size)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return twinloop::test_support::counted_malloc(size);
}
[[gnu::noinline]] void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return twinloop::test_support::counted_malloc(size);
}
[[gnu::noinline]] void operator delete(void* p) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete[](void* p) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
