// polyattn/core/sequences.hpp — the list of independent sequences in a call.
//
// Without cu_seqlens a call holds B sequences of length T (sequence n = batch row n). With
// cu_seqlens (B == 1) sequence n covers packed tokens [cu[n], cu[n+1]). Either way sequence n
// owns row n of initial_state / final_state.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "polyattn/core/tensor_view.hpp"

namespace polyattn {

struct Segment {
  index_t batch;   // batch row of the activations
  index_t begin;   // first token (along T)
  index_t length;  // number of tokens
};

// Call only after check::cu_seqlens has accepted `cu`.
inline std::vector<Segment> segments(index_t B, index_t T, std::span<const std::int64_t> cu) {
  std::vector<Segment> out;
  if (cu.empty()) {
    out.reserve(static_cast<std::size_t>(B));
    for (index_t b = 0; b < B; ++b) out.push_back({b, 0, T});
  } else {
    out.reserve(cu.size() - 1);
    for (std::size_t n = 0; n + 1 < cu.size(); ++n) out.push_back({0, cu[n], cu[n + 1] - cu[n]});
  }
  return out;
}

}  // namespace polyattn
