// bench/bench_papers_kernels.hpp — the papers' fusion kernels polyattn-bench-sparse times
// (BlockRank's mask, CLEAR's circular window, Combiner's segment mask, DHSA's
// token selection), declared extern;
// bench_papers_units.cpp compiles them once per ISA (polyattn_bench_papers_units), as a user's
// project would.
#pragma once

#include "polyattn/softmax/blockrank.hpp"
#include "polyattn/softmax/clear.hpp"
#include "polyattn/softmax/combiner.hpp"
#include "polyattn/sparse/dhsa.hpp"

#define POLYATTN_BENCH_PAPERS_KERNELS(X) \
  POLYATTN_BLOCKRANK_KERNELS(X)          \
  POLYATTN_CLEAR_KERNELS(X)              \
  POLYATTN_COMBINER_KERNELS(X)           \
  POLYATTN_DHSA_KERNELS(X)
POLYATTN_BENCH_PAPERS_KERNELS(POLYATTN_KERNEL_EXTERN)
