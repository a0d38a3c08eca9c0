/* An exec request's fields, checked and turned into a struct spec for the child. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <string.h>
#include <sys/resource.h>

#include "exec.h"
#include "init.h"

static char **str_array(const struct mp_doc *d, uint32_t arr, const char *what, int extra,
			struct err *e)
{
	uint32_t n = d->o[arr].n;
	char **v = arena_alloc((n + 1 + extra) * sizeof(char *));
	if (!v) {
		seterr(e, ENOMEM, "out of memory");
		return NULL;
	}
	for (uint32_t k = 0; k < n; k++)
		if (!(v[k] = dup_strobj(d, mp_elem(d, arr, k), what, e)))
			return NULL;
	v[n] = NULL;
	return v;
}

/* A "seccomp" field: an array of struct sock_filter, copied into the request's arena. */
int bpf_program(const struct mp_doc *d, uint32_t sc, struct sock_fprog *prog, struct err *e)
{
	uint32_t n = d->o[sc].n;
	if (n == 0 || n % sizeof(struct sock_filter) ||
	    n / sizeof(struct sock_filter) > BPF_MAXINSNS)
		return seterr(e, EPROTO, "\"seccomp\" is not a BPF program");
	prog->len = (unsigned short)(n / sizeof(struct sock_filter));
	prog->filter = arena_alloc(n);
	if (!prog->filter)
		return seterr(e, ENOMEM, "out of memory");
	memcpy(prog->filter, d->o[sc].v.p, n);
	return 0;
}

int parse_exec(struct req *r, struct spec *s, struct err *e)
{
	const struct mp_doc *d = &r->doc;
	uint32_t argv = 0, env = 0, sc = 0, rl = 0, in = 0;
	char *stdio = NULL;
	int64_t caps = 0, cg = 0;
	int want;

	memset(s, 0, sizeof(*s));
	s->nnp = true;
	s->pty_slave = -1;
	s->limit = -1;
	if (get_type(d, 0, "argv", MP_ARRAY, &argv, e) <= 0 || d->o[argv].n == 0)
		return e->no ? -1 : seterr(e, EPROTO, "\"argv\" needs at least one element");
	if (!(s->argv = str_array(d, argv, "argv", 0, e)))
		return -1;
	if (get_type(d, 0, "env", MP_ARRAY, &env, e) < 0)
		return -1;
	if (env ? !(s->env = str_array(d, env, "env", 1, e)) :
		  !(s->env = arena_alloc(2 * sizeof(char *))))
		return e->no ? -1 : seterr(e, ENOMEM, "out of memory");
	if (!env)
		s->env[0] = NULL;
	if (get_str(d, 0, "cwd", &s->cwd, e) < 0 || get_str(d, 0, "user", &s->user, e) < 0 ||
	    need_str(d, 0, "stdio", &stdio, e) < 0 || get_bool(d, 0, "nnp", &s->nnp, e) < 0 ||
	    (s->has_caps = get_int(d, 0, "caps", &caps, e)) < 0 ||
	    get_int(d, 0, "cgroups", &cg, e) < 0 || get_type(d, 0, "seccomp", MP_BIN, &sc, e) < 0 ||
	    get_type(d, 0, "rlimits", MP_ARRAY, &rl, e) < 0 ||
	    get_bool(d, 0, "seccomp_shared", &s->shared_seccomp, e) < 0 ||
	    get_type(d, 0, "input", MP_BIN, &in, e) < 0 || get_int(d, 0, "limit", &s->limit, e) < 0)
		return -1;
	s->caps = (uint64_t)caps;
	if (!s->cwd)
		s->cwd = "/";
	if (strcmp(stdio, "pty") == 0)
		s->pty = true;
	else if (strcmp(stdio, "capture") == 0)
		s->capture = true;
	else if (strcmp(stdio, "fds") != 0)
		return seterr(e, EPROTO, "\"stdio\" must be \"fds\", \"pty\" or \"capture\"");
	if (in && !s->capture)
		return seterr(e, EPROTO, "\"input\" goes with \"stdio\": \"capture\" only");
	if (in) {
		s->input = d->o[in].v.p;
		s->input_len = d->o[in].n;
	}
	want = (s->pty || s->capture ? 0 : 3);
	if (cg < 0 || cg > MAX_FDS - want)
		return seterr(e, EPROTO, "bad \"cgroups\" count");
	s->ncg = (int)cg;
	want += s->ncg;
	if (r->nfds < want)
		return seterr(e, EPROTO, "exec expects %d fds, got %d", want, r->nfds);
	close_fds(r->fds + want, r->nfds - want);
	r->nfds = want;
	if (!s->pty && !s->capture)
		memcpy(s->stdio, r->fds, sizeof(s->stdio));
	s->cg = r->fds + (s->pty || s->capture ? 0 : 3);

	if (sc && bpf_program(d, sc, &s->prog, e) < 0)
		return -1;
	if (rl && d->o[rl].n > MAX_RLIMITS)
		return seterr(e, EPROTO, "too many \"rlimits\"");
	for (uint32_t k = 0; rl && k < d->o[rl].n; k++) {
		uint32_t t = mp_elem(d, rl, k), a, b, c;
		if (d->o[t].type != MP_ARRAY || d->o[t].n != 3 ||
		    d->o[a = mp_elem(d, t, 0)].type != MP_INT ||
		    d->o[b = mp_elem(d, t, 1)].type != MP_INT ||
		    d->o[c = mp_elem(d, t, 2)].type != MP_INT || d->o[a].v.i < 0 ||
		    d->o[a].v.i >= RLIM_NLIMITS)
			return seterr(e, EPROTO,
				      "\"rlimits\" entries must be [resource, soft, hard]");
		s->rlres[k] = (int)d->o[a].v.i;
		s->rl[k].rlim_cur = d->o[b].v.i < 0 ? RLIM_INFINITY : (rlim_t)d->o[b].v.i;
		s->rl[k].rlim_max = d->o[c].v.i < 0 ? RLIM_INFINITY : (rlim_t)d->o[c].v.i;
		s->nrl++;
	}
	return 0;
}
