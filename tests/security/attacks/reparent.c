/* An exec's root makes a process that is no descendant of it, to outlive the exec's timeout:
 *   clone_parent <token>: clone(CLONE_PARENT) makes a child of the container's PID 1, which then
 *   starts its own session. The child renames itself to the token, so the test can find it.
 * Prints "escaped <pid>" (or "blocked ...") and then sleeps until killed. */
#include "common.h"

#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>

int main(int argc, char **argv)
{
	const char *token = argc > 2 ? argv[2] : "reparented";
	long pid;

	if (argc < 2 || strcmp(argv[1], "clone_parent") != 0) {
		fprintf(stderr, "usage: reparent clone_parent <token>\n");
		return 125;
	}
	pid = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
	if (pid == 0) {
		setsid();
		prctl(PR_SET_NAME, token, 0, 0, 0);
		for (;;)
			pause();
	}
	if (pid < 0)
		blocked("clone(CLONE_PARENT)", errno);
	else
		printf("escaped %ld\n", pid);
	fflush(stdout);
	for (;;)
		pause();
}
