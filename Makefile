#  faissproxy — build, test, run, install.
#  make run | make check | make test | make fuzz | make deps | make install PREFIX=… DESTDIR=…
#  make dist: a release tarball that runs on a bare Debian 12 (build/dist/).
#  make faiss-suite: FAISS's own Python tests through faiss_proxy (docs/FAISS_SUITE.md)
#  Variants: make test-asan (ASan+UBSan), make test-tsan (TSan);
#  SANITIZE=address,undefined BUILD=build/asan builds any target that way.

PREFIX      ?= /usr/local
DESTDIR     ?=
BUILD       ?= build
DEPS_DIR    ?= build/deps
FAISS_PREFIX ?= /usr
MULTIARCH   := $(shell gcc -print-multiarch 2>/dev/null)
FAISS_LIBDIR ?= $(firstword $(wildcard $(FAISS_PREFIX)/lib/$(MULTIARCH)/libfaiss.a $(FAISS_PREFIX)/lib/libfaiss.a $(FAISS_PREFIX)/lib/libfaiss.so))
FAISS_C_LIB ?= $(firstword $(wildcard $(FAISS_PREFIX)/lib/libfaiss_c.so $(FAISS_PREFIX)/lib/$(MULTIARCH)/libfaiss_c.so) $(DEPS_DIR)/faiss-c/libfaiss_c.a)
#  A C API built here (scripts/build-faiss-c.sh) is a prerequisite of what
#  links FAISS, so that they relink when it is rebuilt; LINK_FAISS links.
FAISS_C_DEP := $(filter $(DEPS_DIR)/%,$(wildcard $(FAISS_C_LIB)))
LINK_FAISS   = $(CXX) $(LDFLAGS) $(filter-out $(FAISS_C_DEP),$^) -o $@ $(FAISS_LIBS) $(NET_LIBS)
BLAS_LIBS   ?= -lopenblas
PYTHON      ?= /usr/bin/python3
PYTHON_SITE ?= $(PREFIX)/lib/python$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)/dist-packages

#  The version is written once, in protocol/fpx_version.h.
VERSION     := $(shell sed -n 's/^\#define FPX_VERSION_STRING "\(.*\)"/\1/p' protocol/fpx_version.h)
SO_MAJOR    := 0
SO_VERSION  := $(VERSION)
FAISS_VERSION := $(shell sed -n 's/^\#define FAISS_VERSION_\(MAJOR\|MINOR\|PATCH\) *//p' \
                   $(FAISS_PREFIX)/include/faiss/Index.h 2>/dev/null | paste -sd.)

CC          ?= gcc
CXX         ?= g++
WERROR      := $(if $(CI),-Werror,)
SANITIZE    ?=
SANFLAGS    := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all,)
OPT         ?= -O2
CPPFLAGS    += -D_GNU_SOURCE -Iprotocol -Icommon -Iclient-c -I$(FAISS_PREFIX)/include -MMD -MP
CFLAGS      += -std=c11 $(OPT) -g -fPIC -pthread -Wall -Wextra -Wno-format-truncation $(WERROR) $(SANFLAGS)
CXXFLAGS    += -std=c++17 $(OPT) -g -fPIC -pthread -Wall -Wextra $(WERROR) $(SANFLAGS)
LDFLAGS     += -pthread $(SANFLAGS)

FAISS_LIBS  := $(FAISS_C_LIB) $(FAISS_LIBDIR) $(BLAS_LIBS) -fopenmp -lstdc++ -lm
NET_LIBS    := -lzmq -lmsgpackc -lsodium
#  The daemon's --metrics-bind HTTP server (server/metrics_http.c only).
HTTP_LIBS   := -lmicrohttpd

PROTOCOL_SRC := $(wildcard protocol/*.c)
#  What the daemon and the load harness share (runtime settings for FAISS).
COMMON_SRC   := $(wildcard common/*.c)
SERVER_SRC   := $(wildcard server/*.c)
SERVER_CXX   := $(wildcard server/*.cpp)
#  The command line's own sources (not part of libfaissproxy).
CLI_SRC      := client-c/faissproxy_cli.c client-c/fpx_vecfile.c
CLIENT_SRC   := $(filter-out $(CLI_SRC),$(wildcard client-c/*.c))
LOADTEST_SRC := $(wildcard client-c/loadtest/*.c)
TEST_SRC     := $(wildcard tests/test_*.c)
TEST_COMMON  := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(patsubst %.cpp,$(BUILD)/obj/%.o,$(1)))

DAEMON   := $(BUILD)/bin/faissproxyd
#  The server as a library: every object of server/ but main.c's entry
#  point. The daemon, the fuzz targets and tests that drive server parts
#  without a socket link it (docs/ARCHITECTURE.md, "The server as a
#  library"); it holds no protocol/ objects, which come from the link line
#  (or libfaissproxy.a) once.
SERVER_LIB_SRC := $(filter-out server/main.c,$(SERVER_SRC)) $(SERVER_CXX) $(COMMON_SRC)
SERVER_LIB := $(BUILD)/lib/libfpxserver.a
CLI      := $(BUILD)/bin/faissproxy
LIB_A    := $(BUILD)/lib/libfaissproxy.a
LIB_SO   := $(BUILD)/lib/libfaissproxy.so
PC_FILE  := $(BUILD)/lib/pkgconfig/faissproxy.pc
MAN_PAGES := man/faissproxyd.8 man/faissproxy.1 man/fpx-loadtest.1
LOADTEST := $(BUILD)/bin/fpx-loadtest
TESTS    := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

.SECONDARY:
.PHONY: all deps run check protocol-doc test test-c test-python faiss-suite test-typescript test-asan test-tsan test-docker test-dist bench fuzz install dist clean distclean
all: $(DAEMON) $(SERVER_LIB) $(CLI) $(LIB_A) $(LIB_SO) $(PC_FILE) $(if $(LOADTEST_SRC),$(LOADTEST))

deps:
	@scripts/deps.sh $(DEPS_DIR) $(FAISS_PREFIX)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

#  The server also needs OpenMP for omp_set_num_threads.
$(BUILD)/obj/server/%.o: CFLAGS += -fopenmp

#  libfaissproxy.so exports only what faissproxy.h and fpx_errors.h
#  declare (they mark it visible); the protocol's functions and the
#  library's own internals stay hidden (docs/CLIENTS.md, "The C
#  interface"). The static library and the programs are unaffected.
$(BUILD)/obj/client-c/%.o $(BUILD)/obj/protocol/%.o: CFLAGS += -fvisibility=hidden

#  Installed binaries find a library next to them (PREFIX/lib) first.
RPATH_ORIGIN := -Wl,-rpath,'$$ORIGIN/../lib'
$(DAEMON) $(CLI) $(LOADTEST): LDFLAGS += $(RPATH_ORIGIN)

$(SERVER_LIB): $(call obj,$(SERVER_LIB_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(DAEMON): $(call obj,server/main.c $(PROTOCOL_SRC)) $(SERVER_LIB) $(FAISS_C_DEP)
	@mkdir -p $(dir $@)
	$(LINK_FAISS) $(HTTP_LIBS)

$(LIB_A): $(call obj,$(CLIENT_SRC) $(PROTOCOL_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIB_SO): $(call obj,$(CLIENT_SRC) $(PROTOCOL_SRC))
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -shared -Wl,-soname,libfaissproxy.so.$(SO_MAJOR) $^ -o $@.$(SO_VERSION) $(NET_LIBS)
	ln -sf libfaissproxy.so.$(SO_VERSION) $@.$(SO_MAJOR)
	ln -sf libfaissproxy.so.$(SO_VERSION) $@

#  Outside /usr the loader does not look in PREFIX/lib (and /usr/local/lib
#  only after ldconfig): programs built with `pkg-config --libs` get an
#  rpath to it, so that they run without LD_LIBRARY_PATH.
PC_RPATH := $(if $(filter /usr /usr/,$(PREFIX)),,-Wl,-rpath,$${libdir} )
PC_SED    = sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(SO_VERSION)|' -e 's|@RPATH@|$(PC_RPATH)|'

$(PC_FILE): client-c/faissproxy.pc.in Makefile
	@mkdir -p $(dir $@)
	$(PC_SED) $< > $@

$(CLI): $(call obj,$(CLI_SRC)) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(NET_LIBS)

#  The load harness links FAISS too, for its --inprocess baseline, run
#  with faissproxyd's runtime settings (common/fpx_runtime.c).
$(call obj,$(LOADTEST_SRC)): CPPFLAGS += -DFPX_FAISS_VERSION='"$(FAISS_VERSION)"'
$(LOADTEST): $(call obj,$(LOADTEST_SRC) $(COMMON_SRC)) $(LIB_A) $(FAISS_C_DEP)
	@mkdir -p $(dir $@)
	$(LINK_FAISS)

#  Tests link the client library and FAISS in-process, to compare the two.
$(BUILD)/tests/%: $(call obj,tests/%.c $(TEST_COMMON)) $(LIB_A) $(FAISS_C_DEP)
	@mkdir -p $(dir $@)
	$(LINK_FAISS)

#  The command line's vector files, tested as a module.
$(BUILD)/tests/test_vecfile: $(call obj,client-c/fpx_vecfile.c)

#  Fuzz targets (tests/fuzz/, docs/FUZZING.md). Built without a fuzzing
#  engine they are test programs that replay a generated seed corpus and
#  deterministic mutants of it; `make fuzz` builds them with libFuzzer.
FUZZ_CORPUS  := $(BUILD)/fuzz/corpus/.stamp
FUZZ_GEN     := $(BUILD)/bin/fpx-fuzz-corpus
FUZZ_LIVE    := $(BUILD)/bin/fpx-fuzz-live
#  Targets that drive server parts directly, without a socket: log and
#  snapshot recovery, upload checks, the registry (docs/FUZZING.md).
FUZZ_DIRECT  := storage upload registry
FUZZ_TESTS   := $(BUILD)/tests/test_fuzz_decoder $(BUILD)/tests/test_fuzz_server \
                $(patsubst %,$(BUILD)/tests/test_fuzz_%,$(FUZZ_DIRECT))
$(call obj,$(wildcard tests/fuzz/*.c)): CPPFLAGS += -Iserver -Itests/fuzz

#  The generator writes the storage seeds through the server's own
#  storage code, so that they are what faissproxyd writes.
$(FUZZ_GEN): $(call obj,tests/fuzz/fpx_fuzz_corpus.c tests/fuzz/fuzz_seeds.c tests/fuzz/fuzz_common.c $(PROTOCOL_SRC)) $(SERVER_LIB) $(FAISS_C_DEP)
	@mkdir -p $(dir $@)
	$(LINK_FAISS)

$(FUZZ_LIVE): $(call obj,tests/fuzz/fpx_fuzz_live.c tests/fuzz/fuzz_seeds.c tests/fuzz/fuzz_common.c tests/fuzz/fuzz_client.c $(PROTOCOL_SRC)) $(FAISS_C_DEP)
	@mkdir -p $(dir $@)
	$(LINK_FAISS)

$(FUZZ_CORPUS): $(FUZZ_GEN)
	rm -rf $(dir $@) && mkdir -p $(dir $@) && $(FUZZ_GEN) $(dir $@) && touch $@

$(BUILD)/tests/test_fuzz_decoder: $(call obj,tests/fuzz/fuzz_decoder.c tests/fuzz/fuzz_replay.c tests/fuzz/fuzz_common.c $(PROTOCOL_SRC)) | $(FUZZ_CORPUS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ -lmsgpackc -lm

$(BUILD)/tests/test_fuzz_server: $(call obj,tests/fuzz/fuzz_server.c tests/fuzz/fuzz_replay.c tests/fuzz/fuzz_common.c tests/fuzz/fuzz_seeds.c tests/fuzz/fuzz_client.c $(PROTOCOL_SRC)) $(SERVER_LIB) $(FAISS_C_DEP) | $(FUZZ_CORPUS)
	@mkdir -p $(dir $@)
	$(LINK_FAISS)

$(BUILD)/tests/test_fuzz_%: $(call obj,tests/fuzz/fuzz_%.c tests/fuzz/fuzz_replay.c tests/fuzz/fuzz_common.c $(PROTOCOL_SRC)) $(SERVER_LIB) $(FAISS_C_DEP) | $(FUZZ_CORPUS)
	@mkdir -p $(dir $@)
	$(LINK_FAISS)

#  make fuzz: the targets with libFuzzer (clang, ASan + UBSan) for
#  FUZZ_DECODER_RUNS / FUZZ_SERVER_RUNS / FUZZ_DIRECT_RUNS executions,
#  then fpx-fuzz-live for FUZZ_LIVE_REQUESTS requests against an ASan
#  faissproxyd whose RSS must stay under FUZZ_RSS_MAX_MB (scripts/fuzz.sh,
#  docs/FUZZING.md).
FUZZ_ENGINE   := build/fuzz-engine
FUZZ_CLANG    ?= clang
FUZZ_CLANGXX  ?= clang++
FUZZ_ENGINE_FLAGS := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
    -fno-sanitize-recover=undefined -DFPX_FUZZ_ENGINE -D_GNU_SOURCE -Iprotocol -Icommon -Iserver -Itests/fuzz \
    -I$(FAISS_PREFIX)/include -pthread
FUZZ_ENGINE_LINK  := -fsanitize=fuzzer,address,undefined -pthread
FUZZ_ENGINE_LIB   := $(FUZZ_ENGINE)/libfpxserver.a
FUZZ_ENGINE_C     := $(filter-out server/metrics_http.c,$(SERVER_LIB_SRC)) $(PROTOCOL_SRC)
FUZZ_ENGINE_C     := $(filter %.c,$(FUZZ_ENGINE_C))

$(FUZZ_ENGINE)/fuzz_decoder: tests/fuzz/fuzz_decoder.c tests/fuzz/fuzz_common.c $(PROTOCOL_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CLANG) -std=c11 $(FUZZ_ENGINE_FLAGS) $(FUZZ_ENGINE_LINK) $^ -o $@ -lmsgpackc -lm

#  libfpxserver.a and protocol/ built by clang with the fuzzer's
#  instrumentation, once for every server target.
$(FUZZ_ENGINE_LIB): $(FUZZ_ENGINE_C) $(SERVER_CXX) $(wildcard server/*.h protocol/*.h common/*.h)
	@mkdir -p $(FUZZ_ENGINE)/obj
	for f in $(FUZZ_ENGINE_C); do \
	    $(FUZZ_CLANG) -std=c11 $(FUZZ_ENGINE_FLAGS) -c $$f -o $(FUZZ_ENGINE)/obj/$$(echo $$f | tr / _).o || exit 1; done
	for f in $(SERVER_CXX); do \
	    $(FUZZ_CLANGXX) -std=c++17 $(FUZZ_ENGINE_FLAGS) -c $$f -o $(FUZZ_ENGINE)/obj/$$(echo $$f | tr / _).o || exit 1; done
	rm -f $@ && ar rcs $@ $(foreach f,$(FUZZ_ENGINE_C) $(SERVER_CXX),$(FUZZ_ENGINE)/obj/$(subst /,_,$(f)).o)

#  FAISS (built with gcc) links with libstdc++ and libgomp, as in gcc builds.
FUZZ_ENGINE_SERVER_LINK = $(FUZZ_CLANGXX) $(FUZZ_ENGINE_LINK) $(filter %.o,$^) $(FUZZ_ENGINE_LIB) -o $@ \
    $(FAISS_C_LIB) $(FAISS_LIBDIR) $(BLAS_LIBS) -lgomp -lstdc++ -lm $(NET_LIBS)

$(FUZZ_ENGINE)/fuzz_server: $(patsubst %,$(FUZZ_ENGINE)/%.o,fuzz_server fuzz_common fuzz_seeds fuzz_client) $(FUZZ_ENGINE_LIB)
	$(FUZZ_ENGINE_SERVER_LINK)

$(FUZZ_ENGINE)/fuzz_%: $(FUZZ_ENGINE)/fuzz_%.o $(FUZZ_ENGINE)/fuzz_common.o $(FUZZ_ENGINE_LIB)
	$(FUZZ_ENGINE_SERVER_LINK)

$(FUZZ_ENGINE)/%.o: tests/fuzz/%.c $(wildcard tests/fuzz/*.h server/*.h protocol/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CLANG) -std=c11 $(FUZZ_ENGINE_FLAGS) -c $< -o $@

fuzz: deps
	@$(MAKE) --no-print-directory BUILD=build/asan SANITIZE=address,undefined OPT=-O1 \
	    build/asan/bin/faissproxyd build/asan/bin/fpx-fuzz-live build/asan/fuzz/corpus/.stamp
	@$(MAKE) --no-print-directory $(FUZZ_ENGINE)/fuzz_decoder $(FUZZ_ENGINE)/fuzz_server \
	    $(patsubst %,$(FUZZ_ENGINE)/fuzz_%,$(FUZZ_DIRECT))
	@scripts/fuzz.sh $(FUZZ_ENGINE) build/asan

#  make run: the server in the foreground, tenant "default" (key from
#  FAISS_PROXY_API_KEY, else generated and printed).
run: deps
	@$(MAKE) --no-print-directory all
	@mkdir -p data
	$(DAEMON) --bind tcp://127.0.0.1:5555 --data-dir ./data

#  The tables of docs/PROTOCOL.md that come from the protocol definition
#  (FPX_OPCODES, FPX_ERRORS): make check fails when the doc and the
#  definition differ; make protocol-doc rewrites the generated ones.
PROTOCOL_DOC := $(BUILD)/bin/fpx-protocol-doc
$(PROTOCOL_DOC): $(call obj,protocol/gen/protocol_doc.c protocol/fpx_protocol.c)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ -lm

#  The opcode handlers and the metrics renderer read registry entries
#  through registry.h's accessors only (docs/ARCHITECTURE.md).
ENTRY_OPAQUE_TO := server/ops.c server/ops_objects.c server/info.c server/transfers.c \
                   server/fields.c server/metrics.c server/metrics_http.c server/broker.c \
                   server/worker.c server/main.c
check: $(PROTOCOL_DOC)
	@$(PROTOCOL_DOC) docs/PROTOCOL.md
	@! grep -l '#include "entry.h"' $(ENTRY_OPAQUE_TO) \
	    || { echo "check: these files must not include server/entry.h (use registry.h's accessors)"; exit 1; }

protocol-doc: $(PROTOCOL_DOC)
	$(PROTOCOL_DOC) --write docs/PROTOCOL.md

test: deps
	@$(MAKE) --no-print-directory check
	@$(MAKE) --no-print-directory test-c
	@$(MAKE) --no-print-directory test-python
	@$(MAKE) --no-print-directory test-typescript
	@$(MAKE) --no-print-directory test-docker
	@$(MAKE) --no-print-directory test-dist
	@$(MAKE) --no-print-directory test-asan

test-c: all $(TESTS) $(FUZZ_TESTS) $(FUZZ_LIVE)
	@tests/run.sh $(BUILD)
	@tests/test_loadtest_smoke.sh $(BUILD)
	@tests/test_config.sh $(BUILD)
	@$(if $(SANITIZE),echo "# tests/test_install.sh: plain build only (a sanitized libfaissproxy loads only into sanitized programs)",DEPS_DIR=$(DEPS_DIR) tests/test_install.sh $(BUILD))

#  The Python drop-in against a real server, compared with Debian's FAISS.
test-python: all
	@FPX_DAEMON=$(abspath $(DAEMON)) FPX_CLI=$(abspath $(CLI)) FAISS_PROXY_LIB=$(abspath $(LIB_SO)) \
	    PYTHONPATH=$(abspath python-shim) $(PYTHON) -m pytest -q -p no:cacheprovider tests/python

#  FAISS 1.7.3's own Python tests through faiss_proxy, against the same
#  files in process (docs/FAISS_SUITE.md). Not part of make test.
FAISS_SUITE_SRC ?= $(DEPS_DIR)/faiss-src
faiss-suite: all
	@PYTHON=$(PYTHON) scripts/faiss-suite.sh $(BUILD) $(FAISS_SUITE_SRC)

#  The TypeScript client (clients/typescript): npm ci, tsc, node --test
#  against a real server, compared with Debian's FAISS. Fails when npm
#  cannot install its dependencies.
test-typescript: all
	@clients/typescript/scripts/make-test.sh $(BUILD)

#  The benchmark suite: build/bench/results.json and docs/BENCHMARKS.md.
bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/bench.sh $(BUILD)

test-asan:
	@$(MAKE) --no-print-directory BUILD=build/asan SANITIZE=address,undefined OPT=-O1 test-c

#  The container image (docker/), where an engine can run a container;
#  skipped, saying why, otherwise. Part of make test.
test-docker: all
	@tests/test_docker.sh

#  The release tarball, unpacked in a bare Debian 12 root (debootstrap
#  minbase, made once in build/deps/minbase-root) and run there; skipped,
#  saying why, where not root. Part of make test.
test-dist: dist
	@tests/test_dist.sh $(DIST_TARBALL)

test-tsan:
	@$(MAKE) --no-print-directory BUILD=build/tsan SANITIZE=thread OPT=-O1 test-c

#  PREFIX is where the files will live, DESTDIR a staging root above it
#  (packagers): paths written into installed files use PREFIX alone.
#  The systemd unit goes where systemd looks for PREFIX=/usr and /usr/local;
#  faissproxyd.conf is a sample (share/faissproxy): /etc is the operator's
#  (docs/OPERATIONS.md).
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
	    $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man8 \
	    $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)$(PREFIX)/share/faissproxy \
	    $(DESTDIR)$(PREFIX)/share/doc/faissproxy
	install -m 755 $(DAEMON) $(CLI) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIB_A) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(LIB_SO).$(SO_VERSION) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libfaissproxy.so.$(SO_VERSION) $(DESTDIR)$(PREFIX)/lib/libfaissproxy.so.$(SO_MAJOR)
	ln -sf libfaissproxy.so.$(SO_VERSION) $(DESTDIR)$(PREFIX)/lib/libfaissproxy.so
	install -m 644 client-c/faissproxy.h protocol/fpx_constants.h protocol/fpx_errors.h protocol/fpx_version.h \
	    $(DESTDIR)$(PREFIX)/include/
	$(PC_SED) client-c/faissproxy.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/faissproxy.pc
	$(if $(LOADTEST_SRC),install -m 755 $(LOADTEST) $(DESTDIR)$(PREFIX)/bin/)
	install -m 644 man/faissproxy.1 man/fpx-loadtest.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 644 man/faissproxyd.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	sed -e 's|/usr/local/|$(PREFIX)/|g' packaging/faissproxyd.service \
	    > $(DESTDIR)$(PREFIX)/lib/systemd/system/faissproxyd.service
	install -m 644 packaging/faissproxyd.conf $(DESTDIR)$(PREFIX)/share/faissproxy/
	install -m 644 README.md docs/OPERATIONS.md docs/SECURITY.md $(DESTDIR)$(PREFIX)/share/doc/faissproxy/
	if ls python-shim/faiss_proxy/*.py >/dev/null 2>&1; then \
	    install -d $(DESTDIR)$(PYTHON_SITE)/faiss_proxy && \
	    install -m 644 python-shim/faiss_proxy/*.py $(DESTDIR)$(PYTHON_SITE)/faiss_proxy/ && \
	    printf '#  Written by make install: where libfaissproxy was installed.\nLIBDIR = %s\n' \
	        "'$(PREFIX)/lib'" > $(DESTDIR)$(PYTHON_SITE)/faiss_proxy/_install.py; fi

#  make dist: build/dist/faissproxy-VERSION-linux-ARCH.tar.gz, a make install
#  tree for /opt/faissproxy plus every shared library a bare Debian 12
#  lacks, with their licences (scripts/dist.sh; docs/OPERATIONS.md,
#  "Release tarball"). FAISS and msgpack's inline functions are linked in.
DIST_ARCH    := $(shell dpkg --print-architecture 2>/dev/null || uname -m)
DIST_NAME    := faissproxy-$(VERSION)-linux-$(DIST_ARCH)
DIST_PREFIX  := /opt/faissproxy
DIST_STAGE   := $(BUILD)/dist/stage
DIST_TARBALL := $(BUILD)/dist/$(DIST_NAME).tar.gz
dist: all
	@$(if $(SANITIZE),echo "make dist: a plain build only (SANITIZE is set)" >&2; exit 1)
	rm -rf $(DIST_STAGE)
	@$(MAKE) --no-print-directory -s PREFIX=$(DIST_PREFIX) DESTDIR=$(abspath $(DIST_STAGE)) install
	mv $(DIST_STAGE)$(DIST_PREFIX) $(DIST_STAGE)/$(DIST_NAME)
	scripts/dist.sh $(DIST_STAGE)/$(DIST_NAME) $(DIST_TARBALL) $(filter %.a,$(FAISS_LIBDIR)) \
	    $(firstword $(wildcard /usr/include/msgpack.h /usr/local/include/msgpack.h))

clean:
	rm -rf $(BUILD)/obj $(BUILD)/bin $(BUILD)/lib $(BUILD)/tests $(BUILD)/fuzz $(BUILD)/dist build/asan build/tsan build/fuzz-engine

distclean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
