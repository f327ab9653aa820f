# Build of pushaid and its unit tests.
#
#   make                 build/pushaid
#   make test-unit       build and run the cmocka unit tests
#   make SANITIZE=1      the same under AddressSanitizer and UBSan, in build-asan/
#
# Every object is built from src/ with dependency files, so a header change
# rebuilds what includes it.

CC      ?= cc
SANITIZE ?= 0

ifeq ($(SANITIZE),1)
BUILD   ?= build-asan
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN   := -fsanitize=address,undefined
else
BUILD   ?= build
OPT     := -O2 -g
LDSAN   :=
endif

CFLAGS  += -std=gnu11 $(OPT) -Wall -Wextra -Wshadow -Wno-unused-parameter \
           -Wstrict-prototypes -Wmissing-prototypes -DH2O_USE_LIBUV=0 -D_GNU_SOURCE -Isrc -Iinclude -MMD -MP
LIBS    := -lh2o-evloop -lssl -lcrypto -ljansson -lsqlite3 -lsodium -lcurl -lpq -lpthread -lm
LDFLAGS += $(LDSAN)

SRCS    := $(wildcard src/*.c)
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
LIB_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/obj/%.o)
TEST_SRCS := $(wildcard tests/unit/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all clean test-unit
all: $(BUILD)/pushaid $(TEST_BINS)

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libpushaid.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/pushaid: $(BUILD)/obj/main.o $(BUILD)/libpushaid.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libpushaid.a
	@mkdir -p $(dir $@) $(BUILD)/obj/tests
	$(CC) $(CFLAGS) -MF $(BUILD)/obj/tests/$*.d -o $@ $< $(BUILD)/libpushaid.a $(LDFLAGS) $(LIBS) -lcmocka

test-unit: $(TEST_BINS)
	@set -e; for t in $(TEST_BINS); do echo "# $$t"; $$t; done

clean:
	rm -rf build build-asan

-include $(LIB_OBJS:.o=.d) $(BUILD)/obj/main.d $(TEST_BINS:$(BUILD)/tests/%=$(BUILD)/obj/tests/%.d)
