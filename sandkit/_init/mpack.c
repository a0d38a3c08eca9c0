#define _GNU_SOURCE
#include <string.h>

#include "mpack.h"

struct rd {
	const uint8_t *p, *end;
	struct mp_doc *doc;
};

static int fail(struct rd *r, const char *why)
{
	if (!r->doc->err)
		r->doc->err = why;
	return -1;
}

static int take(struct rd *r, size_t n, const uint8_t **out)
{
	if ((size_t)(r->end - r->p) < n)
		return fail(r, "truncated msgpack value");
	*out = r->p;
	r->p += n;
	return 0;
}

static uint64_t be(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int k = 0; k < n; k++)
		v = (v << 8) | p[k];
	return v;
}

static int rd_uint(struct rd *r, int n, uint64_t *v)
{
	const uint8_t *p;
	if (take(r, n, &p) < 0)
		return -1;
	*v = be(p, n);
	return 0;
}

static int value(struct rd *r, int depth);

static int container(struct rd *r, struct mp_obj *o, uint32_t idx, int depth)
{
	uint64_t items = o->type == MP_MAP ? 2 * (uint64_t)o->n : o->n;
	if (depth >= MP_MAX_DEPTH)
		return fail(r, "msgpack nesting too deep");
	if (o->n > MP_MAX_ITEMS)
		return fail(r, "msgpack container too large");
	/* Each element needs at least one byte: refuse before recursing on a lying count. */
	if (items > (uint64_t)(r->end - r->p))
		return fail(r, "truncated msgpack container");
	for (uint64_t k = 0; k < items; k++)
		if (value(r, depth + 1) < 0)
			return -1;
	r->doc->o[idx].next = r->doc->len;
	return 0;
}

static int value(struct rd *r, int depth)
{
	struct mp_doc *d = r->doc;
	const uint8_t *p;
	uint64_t u;
	uint32_t idx;
	struct mp_obj *o;
	uint8_t c;

	if (d->len >= d->cap)
		return fail(r, "msgpack document has too many values");
	idx = d->len++;
	o = &d->o[idx];
	memset(o, 0, sizeof(*o));
	o->next = idx + 1;
	if (take(r, 1, &p) < 0)
		return -1;
	c = *p;

	if (c <= 0x7f || c >= 0xe0) {
		o->type = MP_INT;
		o->v.i = (int8_t)c;
		if (c <= 0x7f)
			o->v.i = c;
		return 0;
	}
	if ((c & 0xf0) == 0x80 || (c & 0xf0) == 0x90 || c == 0xdc || c == 0xdd || c == 0xde ||
	    c == 0xdf) {
		o->type = ((c & 0xf0) == 0x80 || c == 0xde || c == 0xdf) ? MP_MAP : MP_ARRAY;
		if (c < 0xa0)
			u = c & 0x0f;
		else if (rd_uint(r, (c == 0xdc || c == 0xde) ? 2 : 4, &u) < 0)
			return -1;
		if (u > MP_MAX_ITEMS)
			return fail(r, "msgpack container too large");
		o->n = (uint32_t)u;
		return container(r, o, idx, depth);
	}
	if ((c & 0xe0) == 0xa0 || (c >= 0xd9 && c <= 0xdb) || (c >= 0xc4 && c <= 0xc6)) {
		o->type = (c >= 0xc4 && c <= 0xc6) ? MP_BIN : MP_STR;
		if ((c & 0xe0) == 0xa0)
			u = c & 0x1f;
		else if (rd_uint(r, 1 << ((c >= 0xd9 ? c - 0xd9 : c - 0xc4)), &u) < 0)
			return -1;
		if (u > MP_MAX_STR)
			return fail(r, "msgpack string too long");
		o->n = (uint32_t)u;
		if (take(r, u, &o->v.p) < 0)
			return -1;
		return 0;
	}
	switch (c) {
	case 0xc0:
		o->type = MP_NIL;
		return 0;
	case 0xc2:
	case 0xc3:
		o->type = MP_BOOL;
		o->v.b = c == 0xc3;
		return 0;
	case 0xcc:
	case 0xcd:
	case 0xce:
	case 0xcf:
		o->type = MP_INT;
		if (rd_uint(r, 1 << (c - 0xcc), &u) < 0)
			return -1;
		if (u > INT64_MAX)
			return fail(r, "msgpack integer does not fit in int64");
		o->v.i = (int64_t)u;
		return 0;
	case 0xd0:
	case 0xd1:
	case 0xd2:
	case 0xd3: {
		int n = 1 << (c - 0xd0);
		o->type = MP_INT;
		if (rd_uint(r, n, &u) < 0)
			return -1;
		if (n < 8 && (u & (1ULL << (8 * n - 1))))
			u |= ~0ULL << (8 * n); /* sign-extend */
		o->v.i = (int64_t)u;
		return 0;
	}
	case 0xca:
	case 0xcb:
		o->type = MP_FLOAT;
		return take(r, c == 0xca ? 4 : 8, &p);
	case 0xd4:
	case 0xd5:
	case 0xd6:
	case 0xd7:
	case 0xd8:
		o->type = MP_EXT;
		return take(r, 1 + (1 << (c - 0xd4)), &p);
	case 0xc7:
	case 0xc8:
	case 0xc9:
		o->type = MP_EXT;
		if (rd_uint(r, 1 << (c - 0xc7), &u) < 0)
			return -1;
		return take(r, u + 1, &p);
	}
	return fail(r, "invalid msgpack byte 0xc1");
}

int mp_decode(struct mp_doc *doc, const uint8_t *buf, size_t len)
{
	struct rd r = { buf, buf + len, doc };
	doc->len = 0;
	doc->err = NULL;
	if (value(&r, 0) < 0)
		return -1;
	if (r.p != r.end)
		return fail(&r, "trailing bytes after msgpack value");
	return 0;
}

uint32_t mp_get(const struct mp_doc *doc, uint32_t map, const char *key)
{
	size_t kl = strlen(key);
	uint32_t k = map + 1;

	if (doc->o[map].type != MP_MAP)
		return 0;
	for (uint32_t n = 0; n < doc->o[map].n; n++) {
		const struct mp_obj *ko = &doc->o[k];
		uint32_t v = ko->next;
		if (ko->type == MP_STR && ko->n == kl && memcmp(ko->v.p, key, kl) == 0)
			return v;
		k = doc->o[v].next;
	}
	return 0;
}

uint32_t mp_elem(const struct mp_doc *doc, uint32_t arr, uint32_t k)
{
	uint32_t e = arr + 1;
	while (k--)
		e = doc->o[e].next;
	return e;
}

static void put(struct mp_w *w, const void *p, size_t n)
{
	if (w->overflow || w->cap - w->len < n) {
		w->overflow = true;
		return;
	}
	memcpy(w->buf + w->len, p, n);
	w->len += n;
}

static void put_be(struct mp_w *w, uint8_t tag, uint64_t v, int n)
{
	uint8_t b[9];
	b[0] = tag;
	for (int k = 0; k < n; k++)
		b[1 + k] = (uint8_t)(v >> (8 * (n - 1 - k)));
	put(w, b, 1 + n);
}

static void head(struct mp_w *w, uint8_t fix, uint8_t fixmax, uint8_t t16, uint32_t n)
{
	if (n <= fixmax) {
		uint8_t b = fix | (uint8_t)n;
		put(w, &b, 1);
	} else if (n <= 0xffff) {
		put_be(w, t16, n, 2);
	} else {
		put_be(w, t16 + 1, n, 4);
	}
}

void mp_w_map(struct mp_w *w, uint32_t n)
{
	head(w, 0x80, 15, 0xde, n);
}
void mp_w_array(struct mp_w *w, uint32_t n)
{
	head(w, 0x90, 15, 0xdc, n);
}

void mp_w_str(struct mp_w *w, const char *s)
{
	size_t n = strlen(s);
	if (n <= 31) {
		uint8_t b = 0xa0 | (uint8_t)n;
		put(w, &b, 1);
	} else if (n <= 0xff) {
		put_be(w, 0xd9, n, 1);
	} else if (n <= 0xffff) {
		put_be(w, 0xda, n, 2);
	} else {
		put_be(w, 0xdb, n, 4);
	}
	put(w, s, n);
}

void mp_w_bin(struct mp_w *w, const void *p, size_t n)
{
	if (n <= 0xff)
		put_be(w, 0xc4, n, 1);
	else if (n <= 0xffff)
		put_be(w, 0xc5, n, 2);
	else
		put_be(w, 0xc6, n, 4);
	put(w, p, n);
}

void mp_w_int(struct mp_w *w, int64_t v)
{
	if (v >= 0 && v <= 0x7f) {
		uint8_t b = (uint8_t)v;
		put(w, &b, 1);
	} else if (v < 0 && v >= -32) {
		uint8_t b = (uint8_t)(int8_t)v;
		put(w, &b, 1);
	} else if (v >= 0) {
		put_be(w, 0xcf, (uint64_t)v, 8);
	} else {
		put_be(w, 0xd3, (uint64_t)v, 8);
	}
}

void mp_w_bool(struct mp_w *w, bool b)
{
	uint8_t c = b ? 0xc3 : 0xc2;
	put(w, &c, 1);
}
