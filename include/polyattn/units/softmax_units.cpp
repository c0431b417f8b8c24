// polyattn/units/softmax_units.cpp — per-ISA instantiations of the softmax-family kernels
// (tiled prefill and KV-cache decode). Not compiled on its own: pass it to
// polyattn_add_arch_units() (CMake variable POLYATTN_SOFTMAX_UNITS; POLYATTN_KERNEL_UNITS lists
// every family's units).
#include "polyattn/softmax/flash.hpp"

POLYATTN_SOFTMAX_FLASH_KERNELS(POLYATTN_KERNEL_INSTANTIATE)

#include "polyattn/softmax/decode.hpp"

POLYATTN_SOFTMAX_DECODE_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
