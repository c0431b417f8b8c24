// bench/bench_common_units.cpp — per-ISA instantiations of the measuring loops of
// bench_common.hpp (peak FMA rate, streaming bandwidth). Not compiled on its own: the bench
// CMakeLists passes it to polyattn_add_arch_units(), which compiles it once per ISA.
#define POLYATTN_BENCH_KERNELS_ONLY 1
#include "bench_common.hpp"

POLYATTN_BENCH_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
