#!/usr/bin/env bash
# Linker launcher for the `vigil` binary (userspace/CMakeLists.txt, VIGIL_STATIC_CLI): runs the
# link command CMake built, with every shared library that has a static archive next to it
# (abseil, Cap'n Proto/KJ, libbpf, zstd, libstdc++) linked statically instead. libc, libm,
# libelf and libz stay shared.
#
# Why: a CLI is started for every question, and dynamic linking was a quarter of `vigil trace
# exec`'s start-up: 45 shared objects, ~9000 relocations, ~5 ms of CPU before main() and 3.5 MiB
# of RSS (docs/cli.md, "Start-up cost"). Mapping each library the link line names (rather than a
# fixed list) keeps this working when a dependency is added.
set -euo pipefail
out=()
grouped=0
extra=()
for arg in "$@"; do
  if [[ "$arg" =~ ^(/.+/lib[^/]+)\.so(\.[0-9.]+)?$ ]]; then
    base="${BASH_REMATCH[1]}"
    base="${base%-[0-9]*.[0-9]*.[0-9]*}"  # libkj-0.9.2 -> libkj
    if [[ -f "$base.a" ]]; then
      if [[ $grouped -eq 0 ]]; then
        out+=("-Wl,--start-group")
        grouped=1
      fi
      out+=("$base.a")
      case "$(basename "$base")" in
        libbpf) extra+=(-lelf -lz) ;;
        libkj-tls) extra+=(-lssl -lcrypto) ;;
        libkj-gzip) extra+=(-lz) ;;
      esac
      continue
    fi
  fi
  out+=("$arg")
done
if [[ $grouped -eq 1 ]]; then
  out+=("-Wl,--end-group")
fi
exec "${out[@]}" "${extra[@]}" -static-libstdc++ -static-libgcc
