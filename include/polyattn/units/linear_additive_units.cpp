// polyattn/units/linear_additive_units.cpp — per-ISA instantiations of the linear family's
// additive-update kernels (the list in linear/kernels.hpp). Not compiled on its own: pass it to
// polyattn_add_arch_units() (CMake variable POLYATTN_LINEAR_UNITS) so a binary built for generic
// x86-64 still runs the AVX2 / AVX-512 kernels on CPUs that have them.
#include "polyattn/linear/kernels.hpp"

POLYATTN_LINEAR_ADDITIVE_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
