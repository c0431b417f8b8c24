// polyattn/units/linear_delta_units.cpp — per-ISA instantiations of the linear family's
// delta-rule kernels (the list in linear/kernels.hpp). Not compiled on its own: pass it to
// polyattn_add_arch_units() (CMake variable POLYATTN_LINEAR_UNITS).
#include "polyattn/linear/kernels.hpp"

POLYATTN_LINEAR_DELTA_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
