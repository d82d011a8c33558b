# The CUDA kernels of cpp/cuda as the static library zipmoe_cuda, linked into the
# Python module (_core), the C++ tests and tools/cuda_bench when it is built.
#
#   ZIPMOE_CUDA=AUTO  build when a working CUDA compiler is found (never when
#                     cross-compiling); otherwise skip quietly, so that
#                     `pip install .` works on machines without nvcc
#   ZIPMOE_CUDA=ON    build; fail when there is no CUDA compiler
#   ZIPMOE_CUDA=OFF   skip
#   ZIPMOE_CUDA_ARCHITECTURES  the GPU architectures compiled for ("80;90")
#
# When built, ZIPMOE_HAVE_CUDA is ON here and the compile definition
# ZIPMOE_HAVE_CUDA=1 reaches every target that links zipmoe_cuda. The CUDA
# runtime is linked statically (CUDA::cudart_static): the module then needs only
# the driver at run time, and imports without one (cuda_available() is false).

string(TOUPPER "${ZIPMOE_CUDA}" _zipmoe_cuda_request)
if(_zipmoe_cuda_request STREQUAL "AUTO")
  set(_zipmoe_cuda_request AUTO)
elseif(ZIPMOE_CUDA)
  set(_zipmoe_cuda_request ON)
else()
  set(_zipmoe_cuda_request OFF)
endif()

set(ZIPMOE_HAVE_CUDA OFF)
if(_zipmoe_cuda_request STREQUAL "AUTO" AND CMAKE_CROSSCOMPILING)
  message(STATUS "zipmoe: CUDA kernels not built (cross-compiling; set ZIPMOE_CUDA=ON to force)")
elseif(NOT _zipmoe_cuda_request STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES "${ZIPMOE_CUDA_ARCHITECTURES}")
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit)
    if(TARGET CUDA::cudart_static)
      set(ZIPMOE_HAVE_CUDA ON)
    elseif(_zipmoe_cuda_request STREQUAL "ON")
      message(FATAL_ERROR "zipmoe: ZIPMOE_CUDA=ON but the CUDA toolkit's static runtime was not found")
    else()
      message(STATUS "zipmoe: CUDA kernels not built (no CUDA toolkit runtime found)")
    endif()
  elseif(_zipmoe_cuda_request STREQUAL "ON")
    message(FATAL_ERROR "zipmoe: ZIPMOE_CUDA=ON but no working CUDA compiler was found "
                        "(put nvcc on PATH or set CMAKE_CUDA_COMPILER)")
  else()
    message(STATUS "zipmoe: CUDA kernels not built (no CUDA compiler found)")
  endif()
endif()

if(ZIPMOE_HAVE_CUDA)
  message(STATUS "zipmoe: CUDA kernels for architectures ${ZIPMOE_CUDA_ARCHITECTURES} "
                 "(nvcc ${CMAKE_CUDA_COMPILER_VERSION})")
  add_library(zipmoe_cuda STATIC
    ${PROJECT_SOURCE_DIR}/cpp/cuda/decode_kernels.cu
    ${PROJECT_SOURCE_DIR}/cpp/cuda/cuda_decode.cu)
  set_target_properties(zipmoe_cuda PROPERTIES
    CUDA_ARCHITECTURES "${ZIPMOE_CUDA_ARCHITECTURES}"
    CUDA_STANDARD 17
    CUDA_STANDARD_REQUIRED ON
    POSITION_INDEPENDENT_CODE ON)
  target_include_directories(zipmoe_cuda PRIVATE ${PROJECT_SOURCE_DIR}/cpp)
  target_link_libraries(zipmoe_cuda PUBLIC zipmoe_core CUDA::cudart_static)
  target_compile_definitions(zipmoe_cuda PUBLIC ZIPMOE_HAVE_CUDA=1)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(zipmoe_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter>)
  endif()

  if(ZIPMOE_BUILD_TOOLS)
    add_executable(cuda_bench ${PROJECT_SOURCE_DIR}/tools/cuda_bench.cu)
    set_target_properties(cuda_bench PROPERTIES CUDA_ARCHITECTURES "${ZIPMOE_CUDA_ARCHITECTURES}"
                                                CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
    target_include_directories(cuda_bench PRIVATE ${PROJECT_SOURCE_DIR}/cpp)
    target_link_libraries(cuda_bench PRIVATE zipmoe_cuda)
  endif()

  # The Python module and the C++ tests are defined after this file is included:
  # they are linked once the top-level CMakeLists.txt has been read.
  function(zipmoe_link_cuda_consumers)
    foreach(consumer _core zipmoe_tests)
      if(TARGET ${consumer})
        target_link_libraries(${consumer} PRIVATE zipmoe_cuda)
      endif()
    endforeach()
  endfunction()
  if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.19)
    cmake_language(DEFER DIRECTORY ${PROJECT_SOURCE_DIR} CALL zipmoe_link_cuda_consumers)
  else()
    # Without deferred calls: every target defined from here on links it.
    link_libraries(zipmoe_cuda)
  endif()
endif()
