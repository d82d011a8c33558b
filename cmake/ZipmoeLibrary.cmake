# libzipmoe: the shared library a native application links (docs/EMBEDDING.md),
# and what `cmake --install` and the Python wheel install for it:
#
#   <lib>/libzipmoe.so            the C API of include/zipmoe.h (ZIPMOE_API) and
#                                 the public C++ API of include/zipmoe/; every
#                                 internal symbol hidden
#   <include>/zipmoe.h, <include>/zipmoe/*.h
#   <lib>/cmake/zipmoe/           find_package(zipmoe CONFIG): the target zipmoe::zipmoe
#   <lib>/pkgconfig/zipmoe.pc     pkg-config --cflags --libs zipmoe
#
# A plain install uses the GNU directories under CMAKE_INSTALL_PREFIX and
# versions the library by the C API (libzipmoe.so.<ZIPMOE_API_VERSION>). The
# wheel (SKBUILD) puts everything under the package, zipmoe/include and
# zipmoe/lib, where zipmoe.get_include(), get_library_dir() and
# get_cmake_dir() find it; a wheel cannot hold symbolic links, so there the
# library is one unversioned file. The build tree gets a package too
# (<build>/cmake), so examples can be built against a development build.

include(GNUInstallDirs)

file(STRINGS ${PROJECT_SOURCE_DIR}/include/zipmoe.h _zipmoe_api_line REGEX "^#define ZIPMOE_API_VERSION [0-9]+")
string(REGEX REPLACE "^#define ZIPMOE_API_VERSION ([0-9]+).*" "\\1" ZIPMOE_API_VERSION "${_zipmoe_api_line}")
if(NOT ZIPMOE_API_VERSION MATCHES "^[0-9]+$")
  message(FATAL_ERROR "zipmoe: cannot read ZIPMOE_API_VERSION from include/zipmoe.h")
endif()

if(DEFINED SKBUILD)
  set(ZIPMOE_INSTALL_LIBDIR zipmoe/lib)
  set(ZIPMOE_INSTALL_BINDIR zipmoe/lib)
  set(ZIPMOE_INSTALL_INCLUDEDIR zipmoe/include)
else()
  set(ZIPMOE_INSTALL_LIBDIR ${CMAKE_INSTALL_LIBDIR})
  set(ZIPMOE_INSTALL_BINDIR ${CMAKE_INSTALL_BINDIR})
  set(ZIPMOE_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR})
endif()
set(ZIPMOE_INSTALL_CMAKEDIR ${ZIPMOE_INSTALL_LIBDIR}/cmake/zipmoe)
set(ZIPMOE_INSTALL_PKGCONFIGDIR ${ZIPMOE_INSTALL_LIBDIR}/pkgconfig)

file(GLOB ZIPMOE_CAPI_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/cpp/capi/*.cpp)
add_library(zipmoe SHARED ${ZIPMOE_CAPI_SOURCES})
add_library(zipmoe::zipmoe ALIAS zipmoe)
target_include_directories(zipmoe
  PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:${ZIPMOE_INSTALL_INCLUDEDIR}>
  PRIVATE ${PROJECT_SOURCE_DIR}/cpp)
target_compile_definitions(zipmoe PRIVATE ZIPMOE_BUILDING_LIBRARY=1 ZIPMOE_VERSION="${PROJECT_VERSION}")
# Beside the Python module in the build tree (zipmoe.get_library_dir() of a development build).
set_target_properties(zipmoe PROPERTIES CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON
                                        LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}
                                        RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(zipmoe PRIVATE -Wall -Wextra -Wno-unused-parameter)
endif()
if(NOT DEFINED SKBUILD)
  set_target_properties(zipmoe PROPERTIES VERSION ${PROJECT_VERSION} SOVERSION ${ZIPMOE_API_VERSION})
endif()

# The whole core goes in, not only what the C API calls: the public C++ API is
# exported too.
if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.24)
  target_link_libraries(zipmoe PRIVATE "$<LINK_LIBRARY:WHOLE_ARCHIVE,zipmoe_core>")
elseif(APPLE)
  target_link_libraries(zipmoe PRIVATE -Wl,-force_load zipmoe_core)
else()
  target_link_libraries(zipmoe PRIVATE -Wl,--whole-archive zipmoe_core -Wl,--no-whole-archive)
endif()
if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
  # Every symbol resolved at link time: a missing one fails here, not in an application.
  target_link_options(zipmoe PRIVATE -Wl,--no-undefined)
endif()

install(TARGETS zipmoe EXPORT zipmoeTargets
  LIBRARY DESTINATION ${ZIPMOE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${ZIPMOE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${ZIPMOE_INSTALL_BINDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/zipmoe.h DESTINATION ${ZIPMOE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/zipmoe DESTINATION ${ZIPMOE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")

# The CMake package, installed and in the build tree.
include(CMakePackageConfigHelpers)
install(EXPORT zipmoeTargets NAMESPACE zipmoe:: DESTINATION ${ZIPMOE_INSTALL_CMAKEDIR})
export(EXPORT zipmoeTargets NAMESPACE zipmoe:: FILE ${CMAKE_BINARY_DIR}/cmake/zipmoeTargets.cmake)
configure_file(${PROJECT_SOURCE_DIR}/cmake/zipmoeConfig.cmake.in ${CMAKE_BINARY_DIR}/cmake/zipmoeConfig.cmake @ONLY)
# 0.x: a new minor version may change the API (ZIPMOE_API_VERSION); from 1.0 on the major version.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(_zipmoe_compatibility SameMinorVersion)
else()
  set(_zipmoe_compatibility SameMajorVersion)
endif()
write_basic_package_version_file(${CMAKE_BINARY_DIR}/cmake/zipmoeConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY ${_zipmoe_compatibility})
install(FILES ${CMAKE_BINARY_DIR}/cmake/zipmoeConfig.cmake ${CMAKE_BINARY_DIR}/cmake/zipmoeConfigVersion.cmake
        DESTINATION ${ZIPMOE_INSTALL_CMAKEDIR})

# pkg-config: relocatable (${pcfiledir}), so the same file serves an install
# prefix and the wheel. Libs carry an rpath, so that a program linked with it
# runs without LD_LIBRARY_PATH wherever the library lies.
file(RELATIVE_PATH _zipmoe_pc_to_prefix /prefix/${ZIPMOE_INSTALL_PKGCONFIGDIR} /prefix)
set(ZIPMOE_PC_PREFIX "\${pcfiledir}/${_zipmoe_pc_to_prefix}")
set(ZIPMOE_PC_LIBDIR "\${prefix}/${ZIPMOE_INSTALL_LIBDIR}")
set(ZIPMOE_PC_INCLUDEDIR "\${prefix}/${ZIPMOE_INSTALL_INCLUDEDIR}")
configure_file(${PROJECT_SOURCE_DIR}/cmake/zipmoe.pc.in ${CMAKE_BINARY_DIR}/pkgconfig-install/zipmoe.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/pkgconfig-install/zipmoe.pc DESTINATION ${ZIPMOE_INSTALL_PKGCONFIGDIR})
# The build tree's (zipmoe.get_pkgconfig_dir() of a development build): the
# checkout's headers and the library in this build folder.
set(ZIPMOE_PC_PREFIX "${CMAKE_BINARY_DIR}")
set(ZIPMOE_PC_LIBDIR "${CMAKE_BINARY_DIR}")
set(ZIPMOE_PC_INCLUDEDIR "${PROJECT_SOURCE_DIR}/include")
configure_file(${PROJECT_SOURCE_DIR}/cmake/zipmoe.pc.in ${CMAKE_BINARY_DIR}/pkgconfig/zipmoe.pc @ONLY)
