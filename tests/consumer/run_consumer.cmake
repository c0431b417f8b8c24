# Installs the polyattn build tree into a scratch prefix, then configures, builds and runs the
# consumer project twice: against the installed package (find_package) and the source tree
# (add_subdirectory). Invoked by ctest as: cmake -DBUILD_DIR=.. -DSOURCE_DIR=.. -DWORK_DIR=.. -P
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR CXX)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer.cmake: ${var} not set")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
if(NOT EXISTS ${prefix}/include/polyattn/polyattn.hpp)
  message(FATAL_ERROR "install did not place include/polyattn/polyattn.hpp under ${prefix}")
endif()

foreach(mode find_package add_subdirectory)
  set(bdir ${WORK_DIR}/${mode})
  run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer/project -B ${bdir}
      -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=Release
      -DPOLYATTN_CONSUME=${mode} -DPOLYATTN_SOURCE_DIR=${SOURCE_DIR}
      -DCMAKE_PREFIX_PATH=${prefix})
  run(${CMAKE_COMMAND} --build ${bdir})
  run(${bdir}/consumer)
endforeach()
