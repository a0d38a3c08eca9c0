/* An exec's root makes a process that is no descendant of it, to outlive the exec's timeout:
 *   clone_parent <token>: clone(CLONE_PARENT) makes a child of the container's PID 1, which then
 *   starts its own session. The child renames itself to the token, so the test can find it.
 *   Prints "escaped <pid>" (or "blocked ...") and then sleeps until killed.
 *   nodump_orphan <token>: forks a child that starts its own session and makes itself
 *   non-dumpable (its /proc/<pid>/fd is then only for a tracer with CAP_SYS_PTRACE), and exits
 *   at once: the child, re-parented to PID 1, keeps the exec's output open. Prints "orphan <pid>". */
#include "common.h"

#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>

static _Noreturn void clone_parent(const char *token)
{
	long pid = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);

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

static int nodump_orphan(const char *token)
{
	pid_t pid = fork();

	if (pid == 0) {
		setsid();
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		prctl(PR_SET_NAME, token, 0, 0, 0);
		for (;;)
			pause();
	}
	if (pid < 0)
		blocked("fork", errno);
	else
		printf("orphan %d\n", (int)pid);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	const char *token = argc > 2 ? argv[2] : "reparented";

	if (argc >= 2 && strcmp(argv[1], "clone_parent") == 0)
		clone_parent(token);
	if (argc >= 2 && strcmp(argv[1], "nodump_orphan") == 0)
		return nodump_orphan(token);
	fprintf(stderr, "usage: reparent clone_parent|nodump_orphan <token>\n");
	return 125;
}
