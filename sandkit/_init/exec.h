/* What an exec request asks for, and the interfaces between the files that serve it: parse.c
 * reads the request into a struct spec, confine.c applies the container's confinement to the
 * init, exec.c forks, child.c becomes the process, proctable.c follows the start and the exit. */
#ifndef SK_EXEC_H
#define SK_EXEC_H

#include <linux/filter.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>

#include "init.h"

#define MAX_RLIMITS 64

struct spec {
	char **argv, **env, *cwd, *user;
	bool pty, capture, nnp;
	int64_t limit;        /* capture: bytes kept per stream, < 0 = all */
	const uint8_t *input; /* capture: what stdin reads (NULL: /dev/null) */
	uint32_t input_len;
	int has_caps;
	uint64_t caps;
	struct sock_fprog prog;
	bool shared_seccomp; /* prog is the container's own profile, which the init may carry */
	struct rlimit rl[MAX_RLIMITS];
	int rlres[MAX_RLIMITS], nrl;
	int stdio[3], pty_slave;
	int *cg;
	int ncg;
};

/* What the child writes to the error pipe when it cannot reach execve. */
struct child_err {
	int no;
	char kind[12];
	char msg[512];
};

/* child.c: runs in the forked child, sets it up as docs/protocol.md orders and execs it; on a
 * failure it writes a child_err to pipefd and exits 127. Never returns. */
__attribute__((noreturn)) void child(struct spec *s, int pipefd);

/* parse.c: fills *s from an exec request (strings in the request's arena); takes the fds the
 * request needs and closes the others. */
int parse_exec(struct req *r, struct spec *s, struct err *e);
/* A "seccomp" field (bin: an array of struct sock_filter), copied into the request's arena. */
int bpf_program(const struct mp_doc *d, uint32_t sc, struct sock_fprog *prog, struct err *e);

/* confine.c: what of the exec's confinement the init carries for all its children. */
int limit_bounding_set(const struct spec *s, struct err *e); /* shrink the init's bounding set */
int share_seccomp(struct spec *s, struct err *e); /* prog.len = 0 when the init carries prog */

/* proctable.c: an exec whose child has not reached execve yet. */
struct starting {
	int64_t id;
	pid_t pid;
	int errfd;  /* the error pipe's read end */
	int master; /* pty: sent with `started` */
	int rd[2];  /* capture: stdout and stderr read ends */
	int64_t limit;
	bool capture;
};
int starting_add(const struct starting *st); /* takes st's fds; -1: out of memory */
pid_t starting_pid(int64_t id);              /* 0: no such exec starting */
pid_t tracked_pid(int64_t id);               /* 0: no such exec running */

#endif
