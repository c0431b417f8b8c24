// tests/softmax/papers2_kernels.hpp — the papers' fusion kernels the test_papers_* tests link
// from their own per-ISA units (papers2_units.cpp), declared extern for every other translation
// unit, as a user's project would list them.
#pragma once

#include "polyattn/softmax/act.hpp"
#include "polyattn/softmax/blockrank.hpp"
#include "polyattn/softmax/clear.hpp"
#include "polyattn/softmax/hyper.hpp"
#include "polyattn/softmax/landmark.hpp"
#include "polyattn/softmax/longheads.hpp"
#include "polyattn/softmax/routing.hpp"

#define POLYATTN_PAPERS2_TEST_KERNELS(X) \
  POLYATTN_BLOCKRANK_KERNELS(X)          \
  POLYATTN_ACT_KERNELS(X)                \
  POLYATTN_CLEAR_KERNELS(X)              \
  POLYATTN_ROUTING_KERNELS(X)            \
  POLYATTN_LONGHEADS_KERNELS(X)          \
  POLYATTN_LANDMARK_KERNELS(X)           \
  POLYATTN_HYPER_KERNELS(X)
POLYATTN_PAPERS2_TEST_KERNELS(POLYATTN_KERNEL_EXTERN)
