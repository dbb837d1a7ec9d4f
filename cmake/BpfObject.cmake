# bpf_object(NAME SOURCE [DEPENDS headers...])
#
# Compiles SOURCE (a *.bpf.c file) with clang for the BPF target against the committed
# vmlinux.h, then generates a libbpf skeleton NAME.skel.h. Both land in the build tree only.
# Defines an INTERFACE target NAME_skel that puts the skeleton on the include path and links
# libbpf. Needs no /sys/kernel/btf on the build machine: CO-RE relocations resolve at load time.

find_program(BPF_CLANG NAMES clang clang-16 clang-15 clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)
# Strips the DWARF sections (-g) from each object: libbpf reads BTF and BTF.ext (which carries
# the line info), never DWARF, and the skeleton embeds the whole object in every binary, where
# the DWARF was ~85 % of the bytes (3.7 MiB of 4.2 MiB over the five collectors) and paged in
# around what libbpf reads at load (docs/performance.md, "Footprint").
find_program(BPF_STRIP NAMES llvm-strip llvm-strip-16 llvm-strip-15 llvm-strip-14 REQUIRED)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(BPF_TARGET_ARCH x86)
  set(VMLINUX_DIR ${CMAKE_SOURCE_DIR}/kernel-compat/x86_64)
else()
  message(FATAL_ERROR "no committed vmlinux.h for ${CMAKE_SYSTEM_PROCESSOR}: see kernel-compat/README.md")
endif()

function(bpf_object NAME SOURCE)
  cmake_parse_arguments(ARG "" "" "DEPENDS" ${ARGN})
  get_filename_component(src ${SOURCE} ABSOLUTE)
  set(out_dir ${CMAKE_BINARY_DIR}/bpf-gen)
  set(obj ${out_dir}/${NAME}.bpf.o)
  set(skel ${out_dir}/${NAME}.skel.h)
  file(GLOB common_headers ${CMAKE_SOURCE_DIR}/bpf/common/*.h ${CMAKE_SOURCE_DIR}/kernel-compat/*.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
    COMMAND ${BPF_CLANG} -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_${BPF_TARGET_ARCH}
            -I${VMLINUX_DIR} -I${CMAKE_SOURCE_DIR}/kernel-compat -I${CMAKE_SOURCE_DIR}/bpf
            -c ${src} -o ${obj}
    COMMAND ${BPF_STRIP} -g ${obj}
    DEPENDS ${src} ${ARG_DEPENDS} ${common_headers}
    COMMENT "BPF ${NAME}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${NAME}_bpf > ${skel}
    DEPENDS ${obj}
    COMMENT "BPF skeleton ${NAME}.skel.h"
    VERBATIM)
  add_custom_target(${NAME}_skel_gen DEPENDS ${skel})
  add_library(${NAME}_skel INTERFACE)
  add_dependencies(${NAME}_skel ${NAME}_skel_gen)
  target_include_directories(${NAME}_skel INTERFACE ${out_dir} ${CMAKE_SOURCE_DIR}/bpf)
  target_link_libraries(${NAME}_skel INTERFACE PkgConfig::LIBBPF)
endfunction()
