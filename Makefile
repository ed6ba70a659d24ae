# One entry point for every task. `make demo` and `make test` are the README's two commands.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all setup build demo test test-host test-ktls lint bench clean

all: build

## setup: install every Debian package the build, demo and tests need (idempotent)
setup:
	@bash scripts/setup.sh

## build: release build of the workspace
build: setup
	$(CARGO) build --release --workspace

## demo: CA, two nodes, a backend, sample traffic, a summary (KTLS=1: in a qemu guest on Debian's 6.1 kernel, VM_KERNEL_NAME=7.2 on 7.2)
demo: build
ifeq ($(KTLS),1)
	VM_MODULES="tls aesni_intel?" tests/vm/run-in-vm.sh target/release/weir demo --large-mib 64
else
	target/release/weir demo
endif

## test: lint, unit, host-kernel (root, netns, tcpdump) and guest-kernel suites (qemu: kTLS on 6.1 and 7.2, RDMA on 6.1)
test: setup
	@bash scripts/test.sh all

## test-host: everything that runs on this kernel
test-host: setup
	@bash scripts/test.sh host

## test-ktls: the guest-kernel suites alone (kTLS on 6.1 and 7.2, RDMA on 6.1)
test-ktls: setup
	@bash scripts/test.sh ktls

## lint: rustfmt check and clippy with warnings as errors
lint: setup
	@bash scripts/test.sh lint

## bench: every scenario, Weir vs haproxy, nginx and Envoy meshes vs no mesh, as ratios; data and charts in target/bench
bench: build
	target/release/weir bench --out target/bench $(BENCH_ARGS)

clean:
	$(CARGO) clean
