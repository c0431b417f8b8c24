// polyattn/units/linear_fused_units.cpp — per-ISA instantiations of the linear family's kernels
// with fused gates (Gated DeltaNet and KDA from raw projections, Mamba2; the list in
// linear/kernels.hpp). Not compiled on its own: pass it to polyattn_add_arch_units() (CMake
// variable POLYATTN_LINEAR_UNITS).
#include "polyattn/linear/kernels.hpp"

POLYATTN_LINEAR_FUSED_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
