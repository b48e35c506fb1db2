# What a distribution packager does, on a machine with Eigen but neither Catch2 nor Google
# Benchmark: configure this project at top level with -DBUILD_TESTING=OFF, build, install; then
# the find_package consumer builds and runs against that install. A second configure, with the
# defaults, shows that the tests and the benchmark are skipped with a message, not an error,
# when their packages are absent.
# Run as: cmake -DALIBI_SOURCE_DIR=... -DWORK_DIR=... -DGENERATOR=... -DCXX=... -P no_test_tools.cmake
foreach(var ALIBI_SOURCE_DIR WORK_DIR GENERATOR CXX)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "no_test_tools.cmake: pass -D${var}=...")
  endif()
endforeach()

set(hide_test_tools -DCMAKE_DISABLE_FIND_PACKAGE_Catch2=ON -DCMAKE_DISABLE_FIND_PACKAGE_benchmark=ON)

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(build "${WORK_DIR}/build")
set(prefix "${WORK_DIR}/prefix")

run("configure with -DBUILD_TESTING=OFF"
  "${CMAKE_COMMAND}" -S "${ALIBI_SOURCE_DIR}" -B "${build}" -G "${GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF ${hide_test_tools})
run("build with -DBUILD_TESTING=OFF" "${CMAKE_COMMAND}" --build "${build}")
foreach(target alibi_tests alibi_bench alibi_quickstart)
  file(GLOB_RECURSE built "${build}/${target}")
  if(built)
    message(FATAL_ERROR "-DBUILD_TESTING=OFF still built ${built}")
  endif()
endforeach()
run("install" "${CMAKE_COMMAND}" --install "${build}" --prefix "${prefix}")
if(NOT EXISTS "${prefix}/include/alibi/alibi.hpp")
  message(FATAL_ERROR "the install has no include/alibi/alibi.hpp")
endif()

set(consumer "${WORK_DIR}/consumer")
run("configure the find_package consumer"
  "${CMAKE_COMMAND}" -S "${CMAKE_CURRENT_LIST_DIR}/find_package" -B "${consumer}" -G "${GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${prefix}"
  ${hide_test_tools})
run("build the find_package consumer" "${CMAKE_COMMAND}" --build "${consumer}")
run("run the find_package consumer" "${consumer}/consumer")
message(STATUS "${run_output}")

# Defaults (tests, bench and examples on) without the packages: skipped with a message.
run("configure with the defaults and no Catch2 or Google Benchmark"
  "${CMAKE_COMMAND}" -S "${ALIBI_SOURCE_DIR}" -B "${WORK_DIR}/defaults" -G "${GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=Release ${hide_test_tools})
foreach(expected "Catch2 2.13 not found, the tests are skipped"
                 "Google Benchmark not found, alibi_bench is skipped")
  string(FIND "${run_output}" "${expected}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the default configure did not say \"${expected}\":\n${run_output}")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK_DIR}")
