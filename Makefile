# berth's two set-up commands (README.md):
#   make demo   install what berth needs, build it, run the demo image
#   make test   install what the tests need and run the whole suite
# Both expect root on Debian/Ubuntu.

SHELL   := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
PREFIX  ?= /usr/local
BIN     := bin
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO      ?= go

# Debian packages: what berth runs on, and the peers and tools its tests use.
RUNTIME_PKGS := busybox-static umoci skopeo e2fsprogs iproute2 ca-certificates
TEST_PKGS    := $(RUNTIME_PKGS) runc git containerd docker.io docker-registry apache2-utils nftables iptables containernetworking-plugins
# The VM engine: QEMU, the tools that build guest disks, and kmod for
# the kernel fetch; the guest kernel itself is unpacked into KERNEL_DIR.
VM_PKGS      := qemu-system-x86 erofs-utils cpio kmod xz-utils
KERNEL_DIR   ?= /var/lib/berth/kernel
# Where install puts berth-restart.service (installed, not enabled).
SYSTEMD_DIR  ?= /etc/systemd/system

.PHONY: all build install deps test-deps demo test check clean conformance fuzz

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/berth ./cmd/berth
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/berth-runtime ./cmd/berth-runtime
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/berth-agent ./cmd/berth-agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/berth-init ./cmd/berth-init
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/berth-registry ./cmd/berth-registry
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/berth-compose ./cmd/berth-compose

install: deps build
	install -m 0755 $(BIN)/berth $(PREFIX)/bin/berth
	install -m 0755 $(BIN)/berth-runtime $(PREFIX)/bin/berth-runtime
	ln -sf berth-runtime $(PREFIX)/bin/berth-runtime-vm
	install -D -m 0755 $(BIN)/berth-agent $(PREFIX)/lib/berth/berth-agent
	install -D -m 0755 $(BIN)/berth-init $(PREFIX)/lib/berth/berth-init
	install -D -m 0755 $(BIN)/berth-registry $(PREFIX)/lib/berth/berth-registry
	install -D -m 0755 $(BIN)/berth-compose $(PREFIX)/lib/berth/berth-compose
	sed 's|/usr/local/bin/berth|$(PREFIX)/bin/berth|' scripts/berth-restart.service > /tmp/berth-restart.service.$$$$ && \
	  install -D -m 0644 /tmp/berth-restart.service.$$$$ $(SYSTEMD_DIR)/berth-restart.service; rm -f /tmp/berth-restart.service.$$$$

deps:
	@command -v umoci >/dev/null && command -v busybox >/dev/null && command -v skopeo >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(RUNTIME_PKGS))

test-deps:
	@for p in $(TEST_PKGS) $(VM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
	$(GO) mod download
	scripts/fetch-kernel.sh $(KERNEL_DIR)

# The main job: import the demo image and run it both ways, as a
# container and as a VM with its own kernel, side by side, each also
# serving a page on a published port; then a small compose project:
# two container replicas behind one port, asking a service run as a VM.
demo: install
	@for p in $(VM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
	scripts/fetch-kernel.sh $(KERNEL_DIR)
	scripts/demo-image.sh /tmp/berth-demo-oci
	berth image import /tmp/berth-demo-oci --name demo
	berth run --rm demo sh -c 'echo "hello from $$(hostname), pid $$$$, user $$(id -un), kernel $$(uname -r)"'
	scripts/demo-network.sh demo
	scripts/demo-compose.sh demo
	berth bench --image demo compare

test: test-deps build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./... 2>&1 | tee /tmp/berth-test.log; exit $${PIPESTATUS[0]}

# OCI runtime-tools validation suite, berth-runtime against runc
# (docs/conformance.md). Prints both summaries; never fails.
conformance: build
	conformance/run.sh

# Every Go fuzz target (func FuzzXxx in a _test.go file, found anew each
# time), one after another, each for FUZZTIME; fails if any finds a crasher
# (scripts/fuzz.sh, docs/fuzzing.md).
FUZZTIME ?= 60s
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

check:
	test -z "$$(gofmt -l .)"
	$(GO) vet ./...
	staticcheck ./...

clean:
	rm -rf $(BIN)
