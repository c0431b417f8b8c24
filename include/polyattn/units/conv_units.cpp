// polyattn/units/conv_units.cpp — per-ISA instantiations of the short convolution kernel. Not
// compiled on its own: pass it to polyattn_add_arch_units() (CMake variable POLYATTN_CONV_UNITS;
// POLYATTN_KERNEL_UNITS lists every family's units).
#include "polyattn/conv/short_conv.hpp"

POLYATTN_CONV_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
