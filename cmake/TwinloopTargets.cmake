# Helpers that give every twinloop folder the same target shape: one library per folder, public
# headers in <folder>/include/twinloop/<folder>/, sources in <folder>/src/, a twinloop:: alias.
include_guard(GLOBAL)

# twinloop_add_library(<folder> [PUBLIC_DEPS ...] [PRIVATE_DEPS ...])
function(twinloop_add_library folder)
  cmake_parse_arguments(ARG "" "" "PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/src/*.cpp")
  set(target twinloop_${folder})
  add_library(${target} STATIC ${sources})
  add_library(twinloop::${folder} ALIAS ${target})
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:include>)
  target_link_libraries(${target} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE twinloop_warnings ${ARG_PRIVATE_DEPS})
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()
