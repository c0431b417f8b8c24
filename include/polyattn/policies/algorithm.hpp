// polyattn/policies/algorithm.hpp — tiling algorithms of the linear family (all give the same
// numbers up to fp32 rounding):
//   Recurrent   token by token, the state touched once per token (also the decode step)
//   Chunked<C>  intra-chunk products of C tokens + inter-chunk state passing, C ∈ {16,32,64,128}
//   Parallel    the masked T×T form (short sequences, cross-check), T ≤ linear::kParallelMaxT
#pragma once

#include <concepts>
#include <cstdint>

namespace polyattn {

struct Recurrent {
  static constexpr const char* name = "recurrent";
};

template <int C>
  requires(C == 16 || C == 32 || C == 64 || C == 128)
struct Chunked {
  static constexpr int chunk = C;
  static constexpr const char* name = "chunked";
};

struct Parallel {
  static constexpr const char* name = "parallel";
};

namespace linear {
// The longest sequence Parallel takes (it materialises T×T per head).
inline constexpr std::int64_t kParallelMaxT = 8192;
}  // namespace linear

template <class A>
concept LinearAlgorithm =
    std::same_as<A, Recurrent> || std::same_as<A, Parallel> || requires { A::chunk; };

}  // namespace polyattn
