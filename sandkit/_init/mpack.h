/* A small strict msgpack decoder and encoder: no allocation, every read bounds-checked. */
#ifndef SK_MPACK_H
#define SK_MPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mp_type { MP_NIL, MP_BOOL, MP_INT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_EXT };

#define MP_MAX_DEPTH 8
#define MP_MAX_ITEMS 4096
#define MP_MAX_STR 65536

/* Decoded values live in one flat array in document order; a container is followed by its
 * children, and `next` is the index just past its whole subtree, so siblings are one hop apart. */
struct mp_obj {
	uint8_t type;
	uint32_t n; /* str/bin: bytes; array: elements; map: pairs */
	uint32_t next;
	union {
		bool b;
		int64_t i;
		const uint8_t *p;
	} v;
};

struct mp_doc {
	struct mp_obj *o;
	uint32_t cap, len;
	const char *err;
};

/* Returns 0 or -1 with doc->err set. The buffer must outlive the document. */
int mp_decode(struct mp_doc *doc, const uint8_t *buf, size_t len);

/* Map lookup by string key; returns the value's index or 0 (index 0 is the root, never a value). */
uint32_t mp_get(const struct mp_doc *doc, uint32_t map, const char *key);
/* Index of the k-th element of an array (caller checks k < n). */
uint32_t mp_elem(const struct mp_doc *doc, uint32_t arr, uint32_t k);

struct mp_w {
	uint8_t *buf;
	size_t cap, len;
	bool overflow;
};

void mp_w_map(struct mp_w *w, uint32_t n);
void mp_w_array(struct mp_w *w, uint32_t n);
void mp_w_str(struct mp_w *w, const char *s);
void mp_w_bin(struct mp_w *w, const void *p, size_t n);
void mp_w_int(struct mp_w *w, int64_t v);
void mp_w_bool(struct mp_w *w, bool b);

#endif
