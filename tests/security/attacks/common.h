/* Shared by the attack helpers. Each helper tries things a hostile container process would try
 * and prints one line per attempt:
 *   "blocked <what>: <errno name>"  the attempt failed, as it must;
 *   "HOLE <what>: <detail>"         the attempt worked: the sandbox let it through.
 * The exit status is the number of holes (capped at 100), so 0 means everything was refused. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int holes;

static void hole(const char *what, const char *fmt, ...)
{
	va_list ap;
	printf("HOLE %s: ", what);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	holes++;
}

static void blocked(const char *what, int no)
{
	printf("blocked %s: %s\n", what, strerrorname_np(no) ? strerrorname_np(no) : "?");
	fflush(stdout);
}

/* For a syscall that must fail: report it, and close an fd it returned by mistake. */
__attribute__((unused)) static void expect_fail(const char *what, long rc, int is_fd)
{
	if (rc < 0) {
		blocked(what, errno);
		return;
	}
	hole(what, "succeeded (returned %ld)", rc);
	if (is_fd)
		close((int)rc);
}

__attribute__((unused)) static int finish(void)
{
	printf("holes: %d\n", holes);
	return holes > 100 ? 100 : holes;
}
