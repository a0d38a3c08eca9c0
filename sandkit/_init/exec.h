/* What an exec request asks for, shared by the init's side (exec.c) and the child that becomes
 * the process (child.c). */
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
	int64_t limit;          /* capture: bytes kept per stream, < 0 = all */
	const uint8_t *input;   /* capture: what stdin reads (NULL: /dev/null) */
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

/* "No such file or directory" -> "no such file or directory", as Go tools print errors. */
const char *lc_strerror(int no, char *buf, size_t len);

#endif
