// polyattn/papers/papers.hpp — the papers' systems (README "The papers' systems"), each composed
// from the library's families: LightNet, SLAB, InLine, MALA, NaLaFormer, Flowformer, Aaren, Titans,
// Mamba-1, Mixture-of-Memories, RALA, Sparse State Expansion, and
// the causal token convolution SLAB and InLine use.
#pragma once

#include "polyattn/papers/aaren.hpp"
#include "polyattn/papers/flowformer.hpp"
#include "polyattn/papers/inline_attention.hpp"
#include "polyattn/papers/lightnet.hpp"
#include "polyattn/papers/mamba1.hpp"
#include "polyattn/papers/mean_corrected.hpp"
#include "polyattn/papers/mom.hpp"
#include "polyattn/papers/nala.hpp"
#include "polyattn/papers/rala.hpp"
#include "polyattn/papers/slab.hpp"
#include "polyattn/papers/sse.hpp"
#include "polyattn/papers/titans.hpp"
#include "polyattn/papers/token_conv.hpp"
