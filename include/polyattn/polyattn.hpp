// polyattn/polyattn.hpp — umbrella header: everything a user of the library needs.
//
// Core: strided views (TensorView, bthd, head_first, bhkv), polyattn::Error and argument
// validation, the SIMD layer with its single runtime ISA dispatcher, executors (Serial,
// ThreadPool, make_executor). Operator arguments (args/), policies (policies/), the linear
// family's operator, algorithms and presets (linear/), softmax attention — tiled prefill, KV
// cache and decode, mask and score-modifier policies (softmax/) — sparse selectors and
// sparse_attention (sparse/) — hybrid combiners and their decoders (hybrid/) — the papers'
// systems composed from those families (papers/).
// The naive double-precision references and the .npy reader/writer are not part of it: tests
// and tools include polyattn/testing.hpp.
// Kernels are compiled for the ISA of your flags, or per ISA with polyattn_add_arch_units(...
// SOURCES ${POLYATTN_KERNEL_UNITS}) for runtime dispatch.
#pragma once

#include "polyattn/core/simd/arch.hpp"  // first: silences a GCC 12 false warning in immintrin.h
#include "polyattn/core/simd/dispatch.hpp"
#include "polyattn/core/simd/ops.hpp"

#include "polyattn/core/block_mask.hpp"
#include "polyattn/core/error.hpp"
#include "polyattn/core/executor.hpp"
#include "polyattn/core/sequences.hpp"
#include "polyattn/core/tensor_view.hpp"
#include "polyattn/core/validate.hpp"
#include "polyattn/core/workspace.hpp"

#include "polyattn/args/linear.hpp"
#include "polyattn/args/softmax.hpp"

#include "polyattn/policies/algorithm.hpp"
#include "polyattn/policies/decay.hpp"
#include "polyattn/policies/feature_map.hpp"
#include "polyattn/policies/fused_gates.hpp"
#include "polyattn/policies/normalizer.hpp"
#include "polyattn/policies/update.hpp"

#include "polyattn/linear/mamba2.hpp"
#include "polyattn/linear/operator.hpp"
#include "polyattn/linear/presets.hpp"
#include "polyattn/linear/speculative.hpp"

#include "polyattn/softmax/act.hpp"
#include "polyattn/softmax/blockrank.hpp"
#include "polyattn/softmax/clear.hpp"
#include "polyattn/softmax/combiner.hpp"
#include "polyattn/softmax/decode.hpp"
#include "polyattn/softmax/flash.hpp"
#include "polyattn/softmax/hyper.hpp"
#include "polyattn/softmax/hyper_causal.hpp"
#include "polyattn/softmax/kv_cache.hpp"
#include "polyattn/softmax/landmark.hpp"
#include "polyattn/softmax/longheads.hpp"
#include "polyattn/softmax/mask.hpp"
#include "polyattn/softmax/modifiers.hpp"
#include "polyattn/softmax/routing.hpp"
#include "polyattn/softmax/tensor.hpp"

#include "polyattn/sparse/sparse.hpp"

#include "polyattn/hybrid/hybrid.hpp"

#include "polyattn/conv/short_conv.hpp"

#include "polyattn/papers/papers.hpp"
