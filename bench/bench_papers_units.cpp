// bench/bench_papers_units.cpp — per-ISA instantiations of bench_papers_kernels.hpp. Not compiled
// on its own: the bench CMakeLists passes it to polyattn_add_arch_units().
#include "bench_papers_kernels.hpp"

POLYATTN_BENCH_PAPERS_KERNELS(POLYATTN_KERNEL_INSTANTIATE)
