/* libFuzzer harness for the init's msgpack decoder (sandkit/_init/mpack.c), the first code in the
 * container that touches bytes from the host. Build:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I sandkit/_init tests/fuzz/fuzz_mpack.c
 * Checks, besides the sanitizers: one node per input byte is always enough (the init sizes its
 * node array that way), every decoded document is well formed (subtree links stay inside it and
 * move forward, strings lie inside the input), and lookups never leave the document. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../sandkit/_init/mpack.c"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__); \
			abort();                                               \
		}                                                              \
	} while (0)

static void walk(const struct mp_doc *d, uint32_t idx, const uint8_t *buf, size_t len, int depth)
{
	const struct mp_obj *o = &d->o[idx];
	CHECK(idx < d->len);
	CHECK(o->next > idx && o->next <= d->len);
	CHECK(depth <= MP_MAX_DEPTH);
	switch (o->type) {
	case MP_STR:
	case MP_BIN:
		CHECK(o->n <= MP_MAX_STR);
		CHECK(o->v.p >= buf && o->v.p + o->n <= buf + len);
		break;
	case MP_ARRAY:
	case MP_MAP: {
		uint32_t items = o->type == MP_MAP ? 2 * o->n : o->n, k = idx + 1;
		CHECK(o->n <= MP_MAX_ITEMS);
		for (uint32_t j = 0; j < items; j++) {
			CHECK(k < o->next);
			walk(d, k, buf, len, depth + 1);
			k = d->o[k].next;
		}
		CHECK(k == o->next);
		if (o->type == MP_ARRAY && o->n)
			CHECK(mp_elem(d, idx, o->n - 1) < o->next);
		if (o->type == MP_MAP) {
			/* the keys the init looks up, and every key actually present */
			static const char *const keys[] = { "t", "id", "argv", "env", "rootfs", "mounts", "" };
			for (size_t j = 0; j < sizeof(keys) / sizeof(keys[0]); j++) {
				uint32_t v = mp_get(d, idx, keys[j]);
				CHECK(v == 0 || (v > idx && v < o->next));
			}
		}
		break;
	}
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mp_doc doc = { 0 };
	if (size > 65536)
		return 0; /* MAX_PACKET: the socket never delivers more */
	doc.cap = (uint32_t)size + 1;
	doc.o = malloc(sizeof(*doc.o) * doc.cap); /* exact size: ASan sees any overrun */
	if (mp_decode(&doc, data, size) == 0) {
		CHECK(doc.err == NULL && doc.len >= 1 && doc.len <= size);
		walk(&doc, 0, data, size, 0);
		CHECK(doc.o[0].next == doc.len);
	} else {
		CHECK(doc.err != NULL);
		CHECK(strcmp(doc.err, "msgpack document has too many values") != 0);
	}
	free(doc.o);

	/* the encoder: whatever it is asked, it never writes past its buffer */
	uint8_t out[64];
	struct mp_w w = { out, size % sizeof(out), 0, false };
	for (size_t k = 0; k + 8 < size && k < 256; k += 9) {
		int64_t v;
		memcpy(&v, data + k + 1, 8);
		switch (data[k] % 5) {
		case 0: mp_w_map(&w, (uint32_t)v); break;
		case 1: mp_w_array(&w, (uint32_t)v); break;
		case 2: mp_w_int(&w, v); break;
		case 3: mp_w_bool(&w, v & 1); break;
		default: mp_w_str(&w, (v & 1) ? "t" : "a string longer than thirty-one bytes, to take 0xd9"); break;
		}
		CHECK(w.len <= w.cap);
	}
	return 0;
}
