// tests/linear/preset_sweep.hpp — every linear preset through one algorithm against the
// reference over the awkward shapes of docs/conventions.md §9. Each algorithm's sweep lives in its
// own test translation unit (one instantiation set per file keeps compile time and memory small).
#pragma once

#include "linear/linear_harness.hpp"

namespace polyattn::test {

template <class Algo, class Make>
void sweep(const Make& make, const char* name) {
  const LinearShape shapes[] = {
      {.B = 1, .T = 1, .H = 1, .HV = 1, .K = 16, .V = 16},
      {.B = 1, .T = 40, .H = 1, .HV = 1, .K = 1, .V = 1},
      {.B = 1, .T = 33, .H = 1, .HV = 3, .K = 3, .V = 5},
      {.B = 2, .T = 63, .H = 2, .HV = 4, .K = 60, .V = 17},
      {.B = 1, .T = 65, .H = 1, .HV = 2, .K = 100, .V = 64},
      {.B = 1, .T = 64, .H = 1, .HV = 2, .K = 128, .V = 128},
      {.B = 1, .T = 333, .H = 1, .HV = 1, .K = 16, .V = 100},
  };
  std::uint64_t seed = 100;
  for (const auto& s : shapes)
    for (bool h0 : {false, true}) {
      const auto op = make(s.HV);
      LinearData data(s, seed++, 1.0, op.options().normalizer == Normalizer::Sum);
      expect_matches_reference<Algo>(op, data, h0,
                                     std::string(name) + " " + s.str() + (h0 ? " h0" : ""));
    }
}

template <class Algo>
void all_presets() {
  sweep<Algo>([](index_t) { return presets::linear_attn{}; }, "linear_attn");
  sweep<Algo>([](index_t) { return presets::make_linear_attn_normalized(); }, "linear_attn_norm");
  sweep<Algo>([](index_t hv) { return presets::make_retention(hv); }, "retention");
  sweep<Algo>([](index_t hv) { return presets::make_lightning_attn(hv, 0, 2); }, "lightning");
  sweep<Algo>([](index_t) { return presets::simple_gla{}; }, "simple_gla");
  sweep<Algo>([](index_t) { return presets::gla{}; }, "gla");
  sweep<Algo>([](index_t) { return presets::make_delta_rule(); }, "delta_rule");
  sweep<Algo>([](index_t) { return presets::make_gated_delta_rule(); }, "gated_delta_rule");
  sweep<Algo>([](index_t) { return presets::make_kda(); }, "kda");
}

}  // namespace polyattn::test
