# vigil: `make run` to try it on this host, `make test` to build and pass the whole suite.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo
# BPF C (bpf/, bench/floor/ and the kernel-compat/*.bpf.h shims) is kernel style (bpf/.clang-format);
# everything else is the Google-based .clang-format at the top.
FORMAT_FILES = $(shell git ls-files '*.cc' '*.h' '*.c' | grep -v '^kernel-compat/.*vmlinux.h$$' \
                 | grep -v '^kernel-compat/.*\.bpf\.h$$')
SHIM_FILES = $(shell git ls-files 'kernel-compat/*.bpf.h')

.PHONY: all deps build test unit-test run format format-check bench clean

all: build

deps:
	@bash ci/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@MAKEFLAGS=--no-print-directory cmake --build $(BUILD) -j$(JOBS)

test: build format-check
	@bash ci/run-tests.sh $(BUILD)

run: build
	@bash deploy/local/run.sh $(BUILD)

format:
	@clang-format -i $(FORMAT_FILES)
	@clang-format -i --style=file:bpf/.clang-format $(SHIM_FILES)

format-check:
	@clang-format --dry-run -Werror $(FORMAT_FILES) && \
	  clang-format --dry-run -Werror --style=file:bpf/.clang-format $(SHIM_FILES) || \
	  (echo "format-check: run 'make format' to fix the files above" >&2; exit 1)

bench: build
	@if [ -x bench/run.sh ]; then bash bench/run.sh $(BUILD); \
	 else echo "bench: the benchmark harness is not in this build yet" >&2; exit 3; fi

clean:
	rm -rf $(BUILD)
