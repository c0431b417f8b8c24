// examples/custom_decay_units.cpp — the per-ISA kernels of custom_decay.hpp's policy set.
// Passed to polyattn_add_arch_units (examples/CMakeLists.txt), never compiled as an ordinary
// source: each generated unit instantiates the Recurrent and Chunked kernels for its own ISA.
#include "custom_decay.hpp"

POLYATTN_LINEAR_KERNELS_FOR(POLYATTN_KERNEL_INSTANTIATE, ::FlooredLogSigmoidDecay,
                            ::polyattn::DeltaUpdate, ::polyattn::NoNormalizer)
