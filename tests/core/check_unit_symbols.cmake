# tests/core/check_unit_symbols.cmake — a mixed-ISA binary must not depend on link order: every
# function an ISA unit defines as a weak (inline / template) symbol must be specific to that ISA,
# i.e. its demangled name holds the unit's per-ISA namespace (polyattn::...::unit_<isa>::) or
# the unit's Arch tag (a template on it). Anything else — a polyattn helper outside the per-ISA
# namespace, a std:: or xsimd helper left out of line — could be compiled with AVX-512
# instructions and kept by the linker for a caller on another ISA.
#
#   cmake -DNM=<nm> -DOBJECTS=<object>;<object>... -P check_unit_symbols.cmake
# Objects whose name carries no ISA (or the scalar unit, which needs no flags) are skipped.
if(NOT NM OR NOT OBJECTS)
  message(FATAL_ERROR "check_unit_symbols: pass -DNM=<nm> and -DOBJECTS=<objects>")
endif()
set(markers_avx512 "::unit_avx512::" "xsimd::avx512bw")
set(markers_avx2 "::unit_avx2::" "xsimd::fma3<xsimd::avx2>")
set(markers_sse42 "::unit_sse42::" "xsimd::sse4_2")
set(checked 0)
set(bad "")
foreach(obj IN LISTS OBJECTS)
  get_filename_component(name "${obj}" NAME)
  set(isa "")
  foreach(candidate avx512 avx2 sse42)
    if(name MATCHES "_${candidate}\\.cpp\\.o(bj)?$")
      set(isa ${candidate})
    endif()
  endforeach()
  if(NOT isa)
    continue()
  endif()
  execute_process(COMMAND "${NM}" -C --defined-only "${obj}" OUTPUT_VARIABLE out
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "check_unit_symbols: ${NM} failed on ${obj}: ${err}")
  endif()
  math(EXPR checked "${checked} + 1")
  string(REPLACE "\n" ";" lines "${out}")
  foreach(line IN LISTS lines)
    # "<address> <type> <name>": weak (W) and global (T) functions.
    if(NOT line MATCHES "^[0-9a-fA-F]+ [WT] (.*)$")
      continue()
    endif()
    set(sym "${CMAKE_MATCH_1}")
    set(ok FALSE)
    foreach(m IN LISTS markers_${isa})
      string(FIND "${sym}" "${m}" at)
      if(at GREATER -1)
        set(ok TRUE)
      endif()
    endforeach()
    if(NOT ok)
      string(APPEND bad "\n  [${isa}] ${name}: ${sym}")
    endif()
  endforeach()
endforeach()
if(checked EQUAL 0)
  message(FATAL_ERROR "check_unit_symbols: no ISA unit among the objects: ${OBJECTS}")
endif()
if(bad)
  message(FATAL_ERROR "check_unit_symbols: functions in ISA units that are not specific to "
                      "their ISA (move them into the per-ISA namespace or template them on the "
                      "Arch tag; see polyattn/core/simd/arch.hpp):${bad}")
endif()
message(STATUS "check_unit_symbols: ${checked} unit objects, every function ISA-specific")
