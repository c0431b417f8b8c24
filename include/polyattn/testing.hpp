// polyattn/testing.hpp — what checking polyattn needs beyond the library itself: the naive
// double-precision references of every family (reference/: the linear recurrence, softmax with
// every mask and modifier, Based, the hybrids, the papers' systems) and the .npy reader/writer of
// the parity tool polyattn-run (io/npy.hpp). Tests, tools and examples that compare against a
// reference include this; inference code includes polyattn/polyattn.hpp only.
#pragma once

#include "polyattn/polyattn.hpp"

#include "polyattn/io/npy.hpp"
#include "polyattn/reference/act.hpp"
#include "polyattn/reference/based.hpp"
#include "polyattn/reference/blockrank.hpp"
#include "polyattn/reference/clear.hpp"
#include "polyattn/reference/combiner.hpp"
#include "polyattn/reference/conv.hpp"
#include "polyattn/reference/dhsa.hpp"
#include "polyattn/reference/hybrid.hpp"
#include "polyattn/reference/hyper.hpp"
#include "polyattn/reference/hyper_causal.hpp"
#include "polyattn/reference/landmark.hpp"
#include "polyattn/reference/linear.hpp"
#include "polyattn/reference/longheads.hpp"
#include "polyattn/reference/mamba2.hpp"
#include "polyattn/reference/papers.hpp"
#include "polyattn/reference/papers2.hpp"
#include "polyattn/reference/routing.hpp"
#include "polyattn/reference/row_softmax.hpp"
#include "polyattn/reference/softmax.hpp"
#include "polyattn/reference/tensor.hpp"
