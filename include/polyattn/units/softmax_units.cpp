// polyattn/units/softmax_units.cpp — per-ISA instantiations of the softmax-family kernels
// (tiled prefill and KV-cache decode). Not compiled on its own: pass it to
// polyattn_add_arch_units() (CMake variable POLYATTN_SOFTMAX_UNITS; POLYATTN_KERNEL_UNITS lists
// every family's units).
#include "polyattn/softmax/flash.hpp"

POLYATTN_ARCH_UNIT_INSTANTIATE(POLYATTN_SOFTMAX_FLASH_SIG);

#include "polyattn/softmax/decode.hpp"

POLYATTN_ARCH_UNIT_INSTANTIATE(POLYATTN_SOFTMAX_DECODE_SIG);
