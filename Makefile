# The README's two commands. Each installs what it needs on a fresh Debian 12 machine with Swift 6.3.
SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RELEASE_BIN = .build/release
# Release builds of the executables link the Swift runtime in (as a tool shipped to machines without
# Swift would be): no dynamic loading of a dozen Swift libraries at every start, about 3 ms less per run.
RELEASE = $(SWIFT) build -c release --static-swift-stdlib
# $(call release,PRODUCT[,PACKAGE]): $(RELEASE) of one product. SwiftPM does not relink a product when
# only --static-swift-stdlib is new to it, so a binary left by a plain `swift build -c release` would stay
# dynamic and start slower: one that still loads libswiftCore is removed first.
release = bin=$(if $(2),$(2)/)$(RELEASE_BIN)/$(1); \
	if [ -x "$$bin" ] && ldd "$$bin" 2>/dev/null | grep -q libswiftCore; then rm -f "$$bin"; fi; \
	$(RELEASE) $(if $(2),--package-path $(2) )--product $(1)

.PHONY: deps build test test-sanitizers fuzz-build test-fuzz fuzz mutants demo soak bench docs test-consumer clean

# libev-dev for the libraries; iproute2 (ip, tc) for the tests that build private network namespaces; gdb
# for Scripts/deadline.sh's stacks of a hung test.
deps:
	@missing=""; \
	[ -f /usr/include/ev.h ] || missing="$$missing libev-dev"; \
	command -v tc >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v gdb >/dev/null 2>&1 || missing="$$missing gdb"; \
	if [ -n "$$missing" ]; then \
		echo "make: installing$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build

# Each pass has a deadline (Scripts/deadline.sh): a hung test fails the pass within TEST_DEADLINE seconds,
# naming the tests that never finished and printing every thread's stack, instead of waiting for CI's limit.
TEST_DEADLINE ?= 1200
DEADLINE = ./Scripts/deadline.sh $(TEST_DEADLINE)

# Tests that build network namespaces need root: as an ordinary user they are skipped with the reason
# printed, unless CI=true, where they must run (Tests/TestSupport/Privileges.swift).
test: deps
	$(SWIFT) build --build-tests
	$(DEADLINE) $(SWIFT) test
	$(MAKE) test-sanitizers
	$(MAKE) test-fuzz
	$(MAKE) docs
	$(MAKE) test-consumer

# The DocC catalogs (Sources/*/*.docc) with swift-docc-plugin, into .build/docs/<Module>.doccarchive. A
# warning (an unresolved symbol link, a malformed article) fails the build.
# docc copies its HTML template (the toolchain's share/docc/render) with Foundation's copyItem, which also
# copies the owner: as an ordinary user that fails (EPERM on fchown to root) and every page errors with
# "The file doesn't exist". It gets a copy of the template the user owns (DOCC_HTML_DIR).
DOCS_DIR = .build/docs
DOCC_RENDER = $(dir $(realpath $(shell command -v $(SWIFT))))../share/docc/render
docs: deps
	@rm -rf $(DOCS_DIR) .build/docc-render && mkdir -p $(DOCS_DIR) && cp -r $(DOCC_RENDER) .build/docc-render
	DOCC_HTML_DIR=$(CURDIR)/.build/docc-render $(SWIFT) package --allow-writing-to-directory $(DOCS_DIR) \
		generate-documentation --target Libev --target BatchedUDP --output-path $(DOCS_DIR) --warnings-as-errors
	@ls -d $(DOCS_DIR)/*

# A package that depends on this one by path, as a user's would (Tests/Consumer): it must build with only
# libev-dev installed and run an echo round trip through the public API.
test-consumer: deps
	$(SWIFT) run --package-path Tests/Consumer consumer

# The same suite under AddressSanitizer (leak checking on, minus the toolchain's own leaks listed in
# Tests/Sanitizers/lsan.supp) and ThreadSanitizer (minus what it cannot judge, Tests/Sanitizers/tsan.supp),
# each in its own build folder. The ASan pass links with the toolchain's lld: gold prints ~400 warnings
# about the ASan runtime's own symbols.
test-sanitizers: deps
	LSAN_OPTIONS=suppressions=$(CURDIR)/Tests/Sanitizers/lsan.supp:print_suppressions=0 \
		$(DEADLINE) $(SWIFT) test --sanitize=address --scratch-path .build-asan -Xswiftc -use-ld=lld
	TSAN_OPTIONS=suppressions=$(CURDIR)/Tests/Sanitizers/tsan.supp \
		$(DEADLINE) $(SWIFT) test --sanitize=thread --scratch-path .build-tsan

# libFuzzer targets (Fuzz/, a package of its own) for every parser of untrusted input. `make fuzz` runs each
# for FUZZ_SECONDS (default 60), growing its corpus in .build/fuzz; `make test` replays the saved corpus
# and the inputs that once crashed (Fuzz/Crashes), then fuzzes each for FUZZ_TEST_SECONDS (default 10).
# The link uses the toolchain's lld: gold crashes on the fuzzer runtime's debug info.
FUZZ_SECONDS ?= 60
FUZZ_TEST_SECONDS ?= 10
FUZZ_TOOLSET = Fuzz/.build/lld-toolset.json

fuzz-build: deps
	@mkdir -p Fuzz/.build
	@echo '{ "schemaVersion": "1.0", "linker": { "path": "$(dir $(realpath $(shell command -v $(SWIFT))))ld.lld" } }' > $(FUZZ_TOOLSET)
	$(SWIFT) build --package-path Fuzz --toolset $(CURDIR)/$(FUZZ_TOOLSET) -Xswiftc -sanitize=fuzzer,address \
		-Xcc -fsanitize=fuzzer-no-link,address

test-fuzz: fuzz-build
	./Scripts/fuzz.sh test $(FUZZ_TEST_SECONDS)

fuzz: fuzz-build
	./Scripts/fuzz.sh run $(FUZZ_SECONDS)

# Puts the send path's old bugs back one at a time; the randomized tests must fail against each.
mutants: deps
	./Scripts/mutants.sh

demo: deps
	@$(call release,udp-blast)
	@$(call release,echo-relay)
	@./Scripts/demo.sh $(RELEASE_BIN)

# echo-relay (echo and relay) under udp-blast load; SOAK_SECONDS (default 60) and SOAK_RATE set the run.
soak: deps
	@$(call release,udp-blast)
	@$(call release,echo-relay)
	@./Scripts/soak.sh $(RELEASE_BIN)

# Everything in release: the package's examples, the C references, the SwiftNIO peer and the ordo-one
# suite (Benchmarks/, a package of its own); user-space instructions per datagram under callgrind
# (Scripts/instructions.sh); more ordo-one passes over the metadata pairs (their ratios are the median
# of METADATA_PASSES passes, default 5, the suite's own included); then one table of figures and ratios
# (Scripts/bench.py). BENCH_ROUNDS (default 9) sets the rounds per workload.
METADATA_PASSES ?= 5
bench: deps
	@missing=""; \
	command -v python3 >/dev/null 2>&1 || missing="$$missing python3"; \
	command -v valgrind >/dev/null 2>&1 || missing="$$missing valgrind"; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(call release,udp-blast)
	@$(call release,echo-relay)
	@$(call release,async-echo)
	mkdir -p .build/c-refs
	cc -O2 -Wall -o .build/c-refs/send_ref Benchmarks/CReferences/send_ref.c -lev
	cc -O2 -Wall -o .build/c-refs/echo_ref Benchmarks/CReferences/echo_ref.c -lev
	cc -O2 -Wall -o .build/c-refs/recv_ref Benchmarks/CReferences/recv_ref.c -lev
	cc -O2 -Wall -o .build/c-refs/pingpong_ref Benchmarks/CReferences/pingpong_ref.c
	@$(call release,nio-peer,Benchmarks)
	@$(call release,instruction-counts,Benchmarks)
	./Scripts/instructions.sh Benchmarks/.build/release/instruction-counts .build/c-refs/send_ref .build/c-refs/recv_ref \
		| tee .build/instructions.txt
	cd Benchmarks && $(SWIFT) package --disable-sandbox benchmark --target UDPBenchmarks --format markdown --no-progress \
		| tee ../.build/ordo-one.md
	for pass in $(shell seq 2 $(METADATA_PASSES)); do \
		(cd Benchmarks && $(SWIFT) package --disable-sandbox benchmark --target UDPBenchmarks --format markdown --no-progress \
			--filter '(echo round trips|send 64 B, GSO (on|off), wildcard).*') > .build/ordo-one-metadata-$$pass.md || exit 1; \
	done
	python3 Scripts/bench.py .build/ordo-one.md .build/instructions.txt $(foreach pass,$(shell seq 2 $(METADATA_PASSES)),.build/ordo-one-metadata-$(pass).md)

clean:
	rm -rf .build .build-asan .build-tsan Benchmarks/.build Fuzz/.build Tests/Consumer/.build
