// polyattn/sparse/sparse.hpp — every block selector and sparse_attention (docs/conventions.md §6):
//   selector.hpp         concept BlockSelector, KeepOptions (diagonal / sink / local blocks),
//                        the shared geometry and mask filling
//   window.hpp           WindowSinkSelector     sliding window + sinks (StreamingLLM)
//   power.hpp            PowerSelector          key blocks at distances 2^i (PowerAttention)
//   topk.hpp             TopKSelector           top-k by mean-pooled q·k (MoBA / SeerAttention)
//   mass.hpp             MassSelector           cumulative-mass threshold γ (FlexPrefill)
//   linear_estimate.hpp  LinearTopKSelector     elu+1 linear-attention estimate, top-k (SEA)
//   neighborhood.hpp     Neighborhood1DSelector, Neighborhood2DSelector (NATTEN, dilation)
//   operator.hpp         sparse_attention(selector, in, opt, o[, mask][, exec])
// Selectors are plain C++ (no per-ISA units); sparse_attention needs the softmax kernel units
// (POLYATTN_SOFTMAX_UNITS) like softmax::flash_attention.
#pragma once

#include "polyattn/sparse/dhsa.hpp"
#include "polyattn/sparse/flexprefill.hpp"
#include "polyattn/sparse/gate.hpp"
#include "polyattn/sparse/hip.hpp"
#include "polyattn/sparse/linear_estimate.hpp"
#include "polyattn/sparse/mass.hpp"
#include "polyattn/sparse/neighborhood.hpp"
#include "polyattn/sparse/operator.hpp"
#include "polyattn/sparse/pooled.hpp"
#include "polyattn/sparse/power.hpp"
#include "polyattn/sparse/selector.hpp"
#include "polyattn/sparse/topk.hpp"
#include "polyattn/sparse/window.hpp"
