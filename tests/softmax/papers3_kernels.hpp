// tests/softmax/papers3_kernels.hpp — the fusion kernels of the papers' systems, part II (causal
// HyperAttention, Combiner, DHSA, …) that their test_papers_* tests link from their own small
// per-ISA units (papers3_units.cpp, kept apart from papers2_units so that neither grows past its
// sanitizer build budget), declared extern for every other translation unit.
#pragma once

#include "polyattn/softmax/combiner.hpp"
#include "polyattn/softmax/hyper_causal.hpp"
#include "polyattn/sparse/dhsa.hpp"

#define POLYATTN_PAPERS3_TEST_KERNELS(X) \
  POLYATTN_HYPER_CAUSAL_KERNELS(X)       \
  POLYATTN_COMBINER_KERNELS(X)           \
  POLYATTN_DHSA_KERNELS(X)
POLYATTN_PAPERS3_TEST_KERNELS(POLYATTN_KERNEL_EXTERN)
