// tests/papers/nala_ref_map.hpp — NaLaFormer's query and key maps as the reference writes them
// (reference::nala_query_features / nala_key_features), as FeatureMaps, so that a test can map
// q and k for reference::mean_corrected the way the reference defines them.
#pragma once

#include <vector>

#include "polyattn/reference/papers.hpp"

namespace polyattn::test {

template <bool Query>
struct RefNalaMap {
  static constexpr bool is_identity = false;
  static constexpr const char* name() noexcept { return "ref_nala"; }
  index_t out_dim(index_t d) const { return 2 * d; }
  void apply(const float* x, index_t d, float* out) const {
    const std::vector<double> in(x, x + d);
    const auto f = Query ? reference::nala_query_features(in) : reference::nala_key_features(in);
    for (std::size_t i = 0; i < f.size(); ++i) out[i] = static_cast<float>(f[i]);
  }
};

}  // namespace polyattn::test
