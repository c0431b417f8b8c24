// polyattn/core/asan.hpp — AddressSanitizer hooks for memory the library keeps for reuse (the
// scratch arena, the workspace pool):
//   POLYATTN_ASAN                defined (1) when compiled under ASan (GCC's __SANITIZE_ADDRESS__,
//                                Clang's __has_feature(address_sanitizer)); asan_interface.h then
//                                included
//   asan_poison(p, n)            marks [p, p + n) unaddressable: a read or write there is reported
//   asan_unpoison(p, n)          marks it addressable again
// Both are no-ops without ASan.
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define POLYATTN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POLYATTN_ASAN 1
#endif
#endif
#if defined(POLYATTN_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace polyattn {

inline void asan_poison([[maybe_unused]] const void* p, [[maybe_unused]] std::size_t n) noexcept {
#if defined(POLYATTN_ASAN)
  if (p != nullptr) ASAN_POISON_MEMORY_REGION(p, n);
#endif
}

inline void asan_unpoison([[maybe_unused]] const void* p, [[maybe_unused]] std::size_t n) noexcept {
#if defined(POLYATTN_ASAN)
  if (p != nullptr) ASAN_UNPOISON_MEMORY_REGION(p, n);
#endif
}

}  // namespace polyattn
