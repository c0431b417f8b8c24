// polyattn/hybrid/hybrid.hpp — the hybrid combiners of docs/conventions.md §7, prefill and decode:
//
//   combiner tag     prefill operator               decoder               header
//   BasedHybrid      hybrid::based_hybrid<Algo>     BasedHybridDecoder    based.hpp
//   Lolcats          hybrid::lolcats<Algo>          LolcatsDecoder        lolcats.hpp
//   Liger            hybrid::liger<Algo>            LigerDecoder          liger.hpp
//   AgentAttention   hybrid::agent_attention        AgentDecoder          agent.hpp
//
// hybrid_attention<C, Algo>(in, opt, o, exec) runs combiner C (a HybridCombiner) with the
// linear branch tiled by Algo (Chunked<64> by default; ignored by agent attention). Argument
// structs and validation: polyattn/args/hybrid.hpp (the same as the naive references in
// polyattn/reference/hybrid.hpp). Link the kernel units of both families (POLYATTN_KERNEL_UNITS).
// Element types: q, k, v and the other activations fp32, bf16 or fp16 (one type for Based,
// LoLCATs and Liger; any mix for agent attention), o any of the three; gates fp32, accumulation
// fp32 (args/hybrid.hpp).
#pragma once

#include "polyattn/hybrid/agent.hpp"
#include "polyattn/hybrid/based.hpp"
#include "polyattn/hybrid/common.hpp"
#include "polyattn/hybrid/liger.hpp"
#include "polyattn/hybrid/lolcats.hpp"

namespace polyattn::hybrid {

template <HybridCombiner C, LinearAlgorithm Algo = Chunked<64>, Executor E = Serial>
void hybrid_attention(const typename C::Inputs& in, const typename C::Options& opt, MutEView4 o,
                      const E& exec = E{}) {
  C::template forward<Algo>(in, opt, o, exec);
}

}  // namespace polyattn::hybrid
