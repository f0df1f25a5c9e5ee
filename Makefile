# portico — plain GNU Makefile. `make` builds build/portico.
# SANITIZE=address,undefined builds an instrumented tree in build-san/.

CC      ?= cc
SANITIZE ?=
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=gnu17 -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
           -D_GNU_SOURCE -Isrc -pthread -fno-strict-aliasing
LDLIBS  += -lyaml -lpcre2-8 -luring -lcares -lssl -lcrypto -lnghttp2 -ljansson -lhiredis -lpthread -lm -latomic

ifneq ($(SANITIZE),)
BUILD   ?= build-san
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
else
BUILD   ?= build
endif

LIB_SRC  := $(sort $(wildcard src/core/*.c src/http/*.c src/proxy/*.c src/filters/*.c \
                              src/gateway/*.c src/control/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOLS    := $(BUILD)/demo_backend

.PHONY: all deps run test unit e2e e2e-uring test-san bench microbench fuzz format lint clean
all: $(BUILD)/portico $(TOOLS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libportico.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/portico: $(BUILD)/src/main.o $(BUILD)/libportico.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/demo_backend: tools/demo_backend.c tools/demo_ws.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ -lpthread -lcrypto

# Unit tests #include the module under test when they need its statics,
# so they link against the library minus nothing: duplicate symbols are
# avoided by the tests including only headers, or by -Wl,--allow-multiple-definition.
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libportico.a tests/unit/unit.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -Itests/unit -o $@ $< $(BUILD)/libportico.a $(LDLIBS)

deps:
	@scripts/deps.sh

run: deps all
	@scripts/run-demo.sh $(BUILD)

unit: $(UNIT_BIN)
	@scripts/run-unit.sh $(UNIT_BIN)

# Extra pytest arguments for the end-to-end passes, e.g.
# E2E_ARGS='-m "not heavy"' (what `make test` gives every pass but the
# plain epoll one) or E2E_ARGS='-k routing'.
E2E_ARGS ?=
# What the end-to-end passes run: the whole suite unless narrowed.
E2E_PATHS ?= tests/e2e
# The heavy tier (floods, long distributions, tens of MiB; marker `heavy`)
# runs once, in the plain epoll pass.
E2E_LIGHT := -m "not heavy"
# The ASan/UBSan pass on io_uring runs the suites whose code paths differ
# by backend (the loop's stream I/O under every codec, TLS, HTTP/2,
# WebSocket tunnels, upstream pools, disconnects, shutdown); the rest of
# the suite runs under ASan on epoll, where its code is the same. Keeps
# `make test` under 30 minutes on this 2-core VM.
E2E_URING_SAN := tests/e2e/test_proxy.py tests/e2e/test_streaming.py \
  tests/e2e/test_keepalive.py tests/e2e/test_client_disconnects.py \
  tests/e2e/test_upstream_pool.py tests/e2e/test_tls.py tests/e2e/test_upstream_tls.py \
  tests/e2e/test_http2.py tests/e2e/test_websocket.py tests/e2e/test_slow_clients.py \
  tests/e2e/test_shutdown.py

e2e: all
	PORTICO_BUILD=$(BUILD) /usr/bin/python3 -m pytest -q $(E2E_PATHS) $(E2E_ARGS)

# The same end-to-end suite with every gateway on the io_uring backend
# (skipped, saying why, on a kernel or seccomp profile that refuses it:
# io_uring is optional, epoll the default).
e2e-uring: all
	@if /usr/bin/python3 scripts/have_io_uring.py; then \
	  echo 'PORTICO_BUILD=$(BUILD) PORTICO_E2E_IO_BACKEND=io_uring pytest $(E2E_PATHS) $(E2E_ARGS)'; \
	  PORTICO_BUILD=$(BUILD) PORTICO_E2E_IO_BACKEND=io_uring /usr/bin/python3 -m pytest -q $(E2E_PATHS) $(E2E_ARGS); \
	else echo "e2e-uring: SKIPPED (the io_uring backend cannot run on this machine)"; fi

# The whole suite, plain then under ASan+UBSan, each on both I/O backends;
# the heavy tier only in the first (plain, epoll) pass.
test: deps
	$(MAKE) all unit
	$(MAKE) e2e
	$(MAKE) e2e-uring E2E_ARGS='$(E2E_LIGHT)'
	$(MAKE) SANITIZE=address,undefined OPT=-O1 all unit
	$(MAKE) SANITIZE=address,undefined OPT=-O1 e2e E2E_ARGS='$(E2E_LIGHT)'
	$(MAKE) SANITIZE=address,undefined OPT=-O1 e2e-uring E2E_ARGS='$(E2E_LIGHT)' \
	  E2E_PATHS='$(E2E_URING_SAN)'

microbench: all
	$(MAKE) $(BUILD)/microbench && $(BUILD)/microbench

MB_SRC := $(sort $(wildcard bench/mb_*.c))
$(BUILD)/microbench: bench/microbench.c $(MB_SRC) $(BUILD)/libportico.a
	$(CC) $(CFLAGS) -Ibench -o $@ bench/microbench.c $(MB_SRC) $(BUILD)/libportico.a $(LDLIBS)

# The benchmark's floor: a bare byte forwarder measured beside the proxies.
$(BUILD)/floor_fwd: bench/floor_fwd.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< -luring

bench: deps all $(BUILD)/floor_fwd
	bench/run.sh

fuzz:
	$(MAKE) -f tests/fuzz/Makefile

format:
	clang-format -i $$(find src tests tools bench -name '*.[ch]')

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	  --suppress=missingIncludeSystem -Isrc src tools bench/floor_fwd.c

clean:
	rm -rf build build-san

-include $(LIB_OBJ:.o=.d) $(BUILD)/src/main.d
