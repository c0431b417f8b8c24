// polyattn/units/linear_units.cpp — per-ISA instantiations of the linear-family kernels.
// Not compiled on its own: pass it to polyattn_add_arch_units() (CMake variable
// POLYATTN_LINEAR_UNITS) so a binary built for generic x86-64 still runs the AVX2 / AVX-512
// kernels on CPUs that have them. Each generated unit instantiates for its own ISA.
#include "polyattn/linear/recurrent.hpp"

POLYATTN_LINEAR_RECURRENT_KERNELS(POLYATTN_KERNEL_INSTANTIATE)

#include "polyattn/linear/chunked.hpp"

POLYATTN_LINEAR_CHUNKED_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
