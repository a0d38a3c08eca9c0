/* The container's confinement carried by the init itself: its bounding set and seccomp
 * profile, applied once to PID 1 so that every process it starts inherits them. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "exec.h"
#include "init.h"

/* The capabilities the init still has in its bounding set, which every process it starts
 * inherits. Why the bounding set, and not only each child's capset: a uid-0 process that execs
 * a program is given every capability of its bounding set (the kernel treats any file as fully
 * capable for root), unless no_new_privs holds it to what it had, and an exec may run without
 * no_new_privs. Only the bounding set bounds that for good: no process can add to it, and only
 * one holding CAP_SETPCAP can shrink it. So the init shrinks its own, once (at the end of set-up,
 * see confine_now, or at the first exec of a container set up without "caps"), to what the
 * container's processes may have, instead of a few dozen prctl calls in every exec child. The
 * init keeps its own permitted and effective sets: it needs them to start processes (the
 * child's set*id and capset) and to install a filter without no_new_privs. */
static uint64_t bounding = ~(uint64_t)0;

int limit_bounding_set(const struct spec *s, struct err *e)
{
	uint64_t keep = s->has_caps ? s->caps : 0;

	if (keep & ~bounding)
		return seterr(e, EPERM,
			      "capabilities beyond the container's first exec were asked for");
	for (int cap = 0; cap < 64 && (bounding & ~keep); cap++) {
		if (!(bounding & ~keep & (uint64_t)1 << cap))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return seterr(e, errno, "drop bounding capability %d: %s", cap,
				      strerror(errno));
		bounding &= ~((uint64_t)1 << cap); /* EINVAL: past the kernel's last capability */
	}
	return 0;
}

/* The container's own seccomp profile, once the init carries it (see share_seccomp). */
static struct sock_filter *carried;
static unsigned short carried_len;

/* Installing a filter costs the kernel a pass over every syscall number (it precomputes which
 * are always allowed), a good part of a short exec. So the init installs the container's
 * profile on itself at the first exec that uses it, and every later process inherits it
 * instead of installing it again. The init's own remaining work (clone, set*id, capset, kill,
 * wait, sendmsg...) is all allowed by any profile an exec could run under. */
int share_seccomp(struct spec *s, struct err *e)
{
	size_t bytes = s->prog.len * sizeof(struct sock_filter);

	if (!s->prog.len || !s->shared_seccomp)
		return 0;
	if (!carried) {
		/* Without no_new_privs: it is inherited by every child and can never be cleared,
		 * and an exec may ask to run without it (so that setuid programs work, as Docker's
		 * no-new-privileges=false). The kernel takes CAP_SYS_ADMIN in the init's user
		 * namespace, which the init has, instead. */
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &s->prog) < 0)
			return seterr(e, errno, "install the container's seccomp filter: %s",
				      strerror(errno));
		carried = malloc(bytes);
		if (!carried)
			return seterr(e, ENOMEM, "out of memory");
		memcpy(carried, s->prog.filter, bytes);
		carried_len = s->prog.len;
	}
	if (carried_len == s->prog.len && memcmp(carried, s->prog.filter, bytes) == 0)
		s->prog.len = 0; /* inherited */
	return 0;
}

/* The container's confinement from its setup message, kept until the init applies it to itself:
 * at the end of set-up, or, for a container to be named later that cannot keep its hostname
 * sysctl (rootless), right after the name is set (the filter may forbid sethostname) and in any
 * case before anything else a request asks for. It must never depend on what an exec asks. */
static struct {
	bool pending;
	int has_caps;
	uint64_t caps;
	struct sock_filter *prog;
	unsigned short len;
} confinement;

int confine_prepare(const struct mp_doc *d, struct err *e)
{
	struct sock_fprog prog = { 0 };
	uint32_t sc = 0;
	int64_t caps = 0;
	size_t bytes;

	if ((confinement.has_caps = get_int(d, 0, "caps", &caps, e)) < 0 ||
	    get_type(d, 0, "seccomp", MP_BIN, &sc, e) < 0 ||
	    (sc && bpf_program(d, sc, &prog, e) < 0))
		return -1;
	confinement.caps = (uint64_t)caps;
	bytes = prog.len * sizeof(struct sock_filter);
	if (bytes && !(confinement.prog = malloc(bytes)))
		return seterr(e, ENOMEM, "out of memory");
	if (bytes)
		memcpy(confinement.prog, prog.filter, bytes);
	confinement.len = prog.len;
	/* Absent keys leave the init as it is (each exec then carries its own, as without set-up). */
	confinement.pending = confinement.has_caps || confinement.len;
	return 0;
}

int confine_now(struct err *e)
{
	struct spec s;

	if (!confinement.pending)
		return 0;
	memset(&s, 0, sizeof(s));
	s.has_caps = confinement.has_caps;
	s.caps = confinement.caps;
	s.prog = (struct sock_fprog){ confinement.len, confinement.prog };
	s.shared_seccomp = true;
	/* The bounding set first: the filter may forbid prctl(PR_CAPBSET_DROP), and dropping needs
	 * nothing the filter could take away. */
	if ((s.has_caps && limit_bounding_set(&s, e) < 0) || share_seccomp(&s, e) < 0)
		return -1;
	confinement.pending = false;
	free(confinement.prog); /* share_seccomp keeps its own copy */
	confinement.prog = NULL;
	return 0;
}
