# Cross-compiling for 64-bit ARM Linux (AArch64) with Debian's cross toolchain:
#   apt-get install -y g++-aarch64-linux-gnu qemu-user
# Binaries run under qemu-user (CMAKE_CROSSCOMPILING_EMULATOR), so ctest and GoogleTest's test
# discovery work on an x86 host; the target's C library comes from /usr/aarch64-linux-gnu
# (libc6-dev-arm64-cross, pulled in by the compiler package). Used by the `aarch64` preset.
# Header-only dependencies (Eigen, xsimd, xtl) are found among the host's packages: they hold no
# compiled code. GoogleTest is built for the target from /usr/src/googletest (CMakeLists.txt).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(_polyattn_triple aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${_polyattn_triple}-gcc)
set(CMAKE_CXX_COMPILER ${_polyattn_triple}-g++)
set(CMAKE_AR ${_polyattn_triple}-ar CACHE FILEPATH "")
set(CMAKE_NM ${_polyattn_triple}-nm CACHE FILEPATH "")
set(CMAKE_RANLIB ${_polyattn_triple}-ranlib CACHE FILEPATH "")

set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/${_polyattn_triple})

# Programs (and header-only CMake packages) from the host; libraries and includes of the target
# from the sysroot first, then the host's prefix for the header-only packages' config files.
set(CMAKE_FIND_ROOT_PATH /usr/${_polyattn_triple})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# Debian installs xsimd's (architecture-independent) package config under the host's multiarch
# directory, which a cross build does not search: point at it.
if(NOT xsimd_DIR)
  file(GLOB _polyattn_xsimd_dirs /usr/lib/*-linux-gnu/cmake/xsimd)
  foreach(_dir IN LISTS _polyattn_xsimd_dirs)
    if(EXISTS ${_dir}/xsimdConfig.cmake AND NOT _dir MATCHES "${_polyattn_triple}")
      set(xsimd_DIR ${_dir} CACHE PATH "xsimd's package config (header-only: the host's)")
      break()
    endif()
  endforeach()
endif()
