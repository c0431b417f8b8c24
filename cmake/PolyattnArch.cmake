# PolyattnArch.cmake — per-ISA translation units for polyattn's runtime dispatch
# (include/polyattn/core/simd/dispatch.hpp). Included by polyattn's own CMakeLists.txt and by the
# installed package config, so consumers get the same functions after find_package(polyattn).
#
#   polyattn_arch_flags(<out-var> <isa>)
#       <isa> is avx512 | avx2 | sse42 | neon | scalar. Sets <out-var> to the GCC/Clang flags
#       enabling that ISA on x86 (empty for scalar, for neon, which is the AArch64 baseline and
#       needs none, and for every ISA on other processors or compilers).
#
#   polyattn_arch_supported(<out-var> <isa>)
#       TRUE when units of <isa> can be built for the target processor with this toolchain:
#       scalar always; sse42 / avx2 / avx512 on x86 with a GCC-style driver; neon on AArch64.
#
#   polyattn_add_arch_units(<target> ISAS <isa>... SOURCES <file>...)
#       For every source and ISA, writes a wrapper <binary-dir>/polyattn_units/<target>/...cpp
#           #define POLYATTN_UNIT_ISA_<ISA> 1
#           #include "<absolute path of the source>"
#       adds it to <target>, compiled with that ISA's flags, and defines POLYATTN_UNIT_<ISA>=1 on
#       <target> (PUBLIC for libraries, PRIVATE for executables) so dispatch() knows the unit
#       exists. The listed sources must NOT also be ordinary sources of the target. ISAs that
#       polyattn_arch_supported() rejects are skipped: silently (a VERBOSE message) when they
#       belong to the other processor family (the x86 ISAs on AArch64, neon on x86), so one ISA
#       list serves both; with a STATUS message otherwise (x86 ISAs with MSVC). In configurations that optimise below -O2 (Debug, no
#       build type, a sanitizer build at -Og) the units are still compiled with -O2, so that
#       the std:: and xsimd helpers they use are inlined instead of being emitted as weak
#       symbols shared with other ISAs (see "Mixing ISA flags" in dispatch.hpp). The ISAs compiled are appended to the target's
#       POLYATTN_UNIT_ISAS property, lowest first.
include_guard(GLOBAL)

# A cache entry so the functions also work when called from a parent project (add_subdirectory).
# Lowest first within each processor family (the last one built for a target is its best).
set(POLYATTN_ARCH_ISAS scalar sse42 avx2 avx512 neon CACHE INTERNAL
  "ISAs polyattn_add_arch_units knows")

# The processor the code is built for (CMAKE_OSX_ARCHITECTURES when it names one).
function(_polyattn_arch_processor out)
  set(proc "${CMAKE_SYSTEM_PROCESSOR}")
  if(CMAKE_OSX_ARCHITECTURES)
    set(proc "${CMAKE_OSX_ARCHITECTURES}")
  endif()
  set(${out} "${proc}" PARENT_SCOPE)
endfunction()

# True when building for AArch64 (Linux aarch64, Apple arm64, Windows ARM64).
function(_polyattn_arch_aarch64 out)
  _polyattn_arch_processor(proc)
  if(proc MATCHES "^(aarch64|arm64|ARM64)$")
    set(${out} TRUE PARENT_SCOPE)
  else()
    set(${out} FALSE PARENT_SCOPE)
  endif()
endfunction()

# True on x86 with a GCC-style driver.
function(_polyattn_arch_x86_gnu out)
  set(ok FALSE)
  _polyattn_arch_processor(proc)
  if(proc MATCHES "^(x86_64|AMD64|amd64|x64|i[3-6]86|x86)$"
     AND CMAKE_CXX_COMPILER_ID MATCHES "^(GNU|Clang|AppleClang|IntelLLVM)$"
     AND NOT CMAKE_CXX_SIMULATE_ID STREQUAL "MSVC")
    set(ok TRUE)
  endif()
  set(${out} ${ok} PARENT_SCOPE)
endfunction()

# Sets <out> to a generator expression adding -O2 to the units in every configuration whose
# flags (CMAKE_CXX_FLAGS, then CMAKE_CXX_FLAGS_<CONFIG>; the last -O wins) optimise below -O2:
# Debug, no build type, or a sanitizer preset's -Og.
function(_polyattn_unit_optimize out)
  set(${out} "" PARENT_SCOPE)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "^(GNU|Clang|AppleClang|IntelLLVM)$"
     OR CMAKE_CXX_SIMULATE_ID STREQUAL "MSVC")
    return()
  endif()
  set(low "")
  set(configs "" ${CMAKE_CONFIGURATION_TYPES} ${CMAKE_BUILD_TYPE} Debug)
  list(REMOVE_DUPLICATES configs)
  foreach(config IN LISTS configs)
    set(cfg_flags "${CMAKE_CXX_FLAGS}")
    if(config)
      string(TOUPPER "${config}" CONFIG)
      string(APPEND cfg_flags " ${CMAKE_CXX_FLAGS_${CONFIG}}")
    endif()
    string(REGEX MATCHALL "(^| )-O[^ ]*" levels "${cfg_flags}")
    list(LENGTH levels n)
    set(level "-O0")
    if(n GREATER 0)
      list(GET levels -1 level)
      string(STRIP "${level}" level)
    endif()
    if(NOT level MATCHES "^-O([2-9]|s|z|fast)$")
      list(APPEND low "$<CONFIG:${config}>")
    endif()
  endforeach()
  if(low)
    list(JOIN low "," any)
    set(${out} "$<$<OR:${any}>:-O2>" PARENT_SCOPE)
  endif()
endfunction()

function(polyattn_arch_flags out isa)
  string(TOLOWER "${isa}" isa)
  if(NOT isa IN_LIST POLYATTN_ARCH_ISAS)
    message(FATAL_ERROR "polyattn_arch_flags: unknown ISA '${isa}' "
                        "(expected one of: ${POLYATTN_ARCH_ISAS})")
  endif()
  set(flags "")
  _polyattn_arch_x86_gnu(x86)
  if(x86)
    if(isa STREQUAL "avx512")
      set(flags -mavx512f -mavx512cd -mavx512dq -mavx512bw -mavx512vl -mavx2 -mfma -mbmi2 -mf16c)
    elseif(isa STREQUAL "avx2")
      set(flags -mavx2 -mfma -mbmi2 -mf16c)
    elseif(isa STREQUAL "sse42")
      set(flags -msse4.2)
    endif()
  endif()
  set(${out} "${flags}" PARENT_SCOPE)
endfunction()

function(polyattn_arch_supported out isa)
  string(TOLOWER "${isa}" isa)
  set(ok FALSE)
  if(isa STREQUAL "scalar")
    set(ok TRUE)
  elseif(isa STREQUAL "neon")
    _polyattn_arch_aarch64(ok)
  elseif(isa IN_LIST POLYATTN_ARCH_ISAS)
    polyattn_arch_flags(flags ${isa})
    if(flags)
      set(ok TRUE)
    endif()
  endif()
  set(${out} ${ok} PARENT_SCOPE)
endfunction()

function(polyattn_add_arch_units target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "ISAS;SOURCES")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "polyattn_add_arch_units: unexpected arguments: ${arg_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT TARGET ${target})
    message(FATAL_ERROR "polyattn_add_arch_units: '${target}' is not a target")
  endif()
  if(NOT arg_ISAS OR NOT arg_SOURCES)
    message(FATAL_ERROR "polyattn_add_arch_units(${target}): needs ISAS and SOURCES")
  endif()
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "INTERFACE_LIBRARY")
    message(FATAL_ERROR "polyattn_add_arch_units: '${target}' is an INTERFACE library; "
                        "units need a target that compiles sources")
  endif()
  if(type STREQUAL "EXECUTABLE")
    set(scope PRIVATE)
  else()
    set(scope PUBLIC)
  endif()

  # Normalise and validate the ISA list; keep the canonical low-to-high order.
  set(wanted "")
  foreach(isa IN LISTS arg_ISAS)
    string(TOLOWER "${isa}" isa)
    if(NOT isa IN_LIST POLYATTN_ARCH_ISAS)
      message(FATAL_ERROR "polyattn_add_arch_units(${target}): unknown ISA '${isa}' "
                          "(expected one of: ${POLYATTN_ARCH_ISAS})")
    endif()
    list(APPEND wanted ${isa})
  endforeach()

  set(unit_dir "${CMAKE_CURRENT_BINARY_DIR}/polyattn_units/${target}")
  foreach(isa IN LISTS POLYATTN_ARCH_ISAS)
    if(NOT isa IN_LIST wanted)
      continue()
    endif()
    polyattn_arch_flags(flags ${isa})
    polyattn_arch_supported(ok ${isa})
    if(NOT ok)
      _polyattn_arch_aarch64(arm)
      if((isa STREQUAL "neon") OR arm)
        set(level VERBOSE)  # the other processor family's ISA
      else()
        set(level STATUS)
      endif()
      message(${level} "polyattn: no ${isa} for this processor or toolchain; "
                       "skipping the ${isa} units of ${target}")
      continue()
    endif()
    _polyattn_unit_optimize(opt)
    list(APPEND flags ${opt})
    string(TOUPPER "${isa}" ISA)
    foreach(src IN LISTS arg_SOURCES)
      get_filename_component(abs "${src}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
      get_filename_component(stem "${abs}" NAME_WE)
      string(MD5 hash "${abs}")
      string(SUBSTRING "${hash}" 0 8 hash)
      set(wrapper "${unit_dir}/${stem}_${hash}_${isa}.cpp")
      file(CONFIGURE OUTPUT "${wrapper}" CONTENT
"// Generated by polyattn_add_arch_units(${target}) — do not edit.
#define POLYATTN_UNIT_ISA_${ISA} 1
#include \"${abs}\"
" @ONLY)
      target_sources(${target} PRIVATE "${wrapper}")
      if(flags)
        # Source properties are directory-scoped; TARGET_DIRECTORY puts them where the target
        # was created, which is where they are looked up.
        set_source_files_properties("${wrapper}" TARGET_DIRECTORY ${target}
                                    PROPERTIES COMPILE_OPTIONS "${flags}")
      endif()
    endforeach()
    target_compile_definitions(${target} ${scope} POLYATTN_UNIT_${ISA}=1)
    set_property(TARGET ${target} APPEND PROPERTY POLYATTN_UNIT_ISAS ${isa})
  endforeach()
endfunction()
