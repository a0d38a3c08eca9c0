/* Attacks on the container's init (PID 1) by a process of the container, which runs until it is
 * killed. The test checks that the init goes on serving the host meanwhile. Usage:
 *   pid1 stop     send SIGSTOP to every process it may signal, over and over (an exec child that
 *                 has not reached execve yet among them)
 *   pid1 trace    seize every other process it can with ptrace and keep it stopped
 *   pid1 flood    send PID 1 every signal but SIGKILL and SIGSTOP, over and over
 */
#include "common.h"

#include <dirent.h>
#include <signal.h>
#include <sys/ptrace.h>

static void stop_everything(void)
{
	for (;;)
		kill(-1, SIGSTOP); /* all but PID 1 and ourselves */
}

static void trace_everything(void)
{
	for (;;) {
		DIR *d = opendir("/proc");
		struct dirent *de;
		if (!d)
			continue;
		while ((de = readdir(d))) {
			long pid = strtol(de->d_name, NULL, 10);
			if (pid > 1 && pid != getpid() &&
			    ptrace(PTRACE_SEIZE, (pid_t)pid, NULL, NULL) == 0)
				ptrace(PTRACE_INTERRUPT, (pid_t)pid, NULL, NULL);
		}
		closedir(d);
	}
}

static void flood_init(void)
{
	for (;;)
		for (int sig = 1; sig < 65; sig++)
			if (sig != SIGKILL && sig != SIGSTOP)
				kill(1, sig);
}

int main(int argc, char **argv)
{
	const char *a = argc > 1 ? argv[1] : "";
	printf("started\n");
	fflush(stdout);
	if (!strcmp(a, "stop"))
		stop_everything();
	if (!strcmp(a, "trace"))
		trace_everything();
	if (!strcmp(a, "flood"))
		flood_init();
	fprintf(stderr, "usage: pid1 stop | trace | flood\n");
	return 125;
}
