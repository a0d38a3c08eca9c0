/* Resource exhaustion from inside a container. Each prints what it reached, so the test can tell
 * whether the container hit a limit. Usage:
 *   bombs fork MAX        fork until refused (or MAX children); print "forked N errno E"; then
 *                         every process waits to be killed
 *   bombs mem MIB         allocate and touch MIB mebibytes; print "mem N" every 8 MiB
 *   bombs fill PATH MIB   write PATH up to MIB mebibytes; print "wrote N MiB errno E"
 *   bombs inodes DIR N    create up to N empty files under DIR; print "inodes N errno E"
 */
#include "common.h"

#include <signal.h>
#include <sys/mman.h>

__attribute__((noreturn)) static void fork_bomb(long max)
{
	long n = 0;
	int err = 0;
	for (; n < max; n++) {
		pid_t pid = fork();
		if (pid == 0) {
			for (;;)
				pause();
		}
		if (pid < 0) {
			err = errno;
			break;
		}
	}
	printf("forked %ld errno %s\n", n, err ? strerrorname_np(err) : "none");
	fflush(stdout);
	for (;;)
		pause();
}

static int mem_bomb(long mib)
{
	long n = 0;
	for (; n < mib; n++) {
		char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			printf("mem %ld errno %s\n", n, strerrorname_np(errno));
			return 0;
		}
		memset(p, 0x5a, 1 << 20);
		if (n % 8 == 0) {
			printf("mem %ld\n", n);
			fflush(stdout);
		}
	}
	printf("mem %ld done\n", n);
	return 0;
}

static int fill(const char *path, long mib)
{
	static char chunk[1 << 20];
	long written = 0;
	int err = 0, fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	memset(chunk, 0xa5, sizeof(chunk));
	if (fd < 0) {
		err = errno;
	} else {
		while (written < (mib << 20)) {
			ssize_t k = write(fd, chunk, sizeof(chunk));
			if (k <= 0) {
				err = k < 0 ? errno : ENOSPC;
				break;
			}
			written += k;
		}
		close(fd);
	}
	printf("wrote %ld MiB errno %s\n", written >> 20, err ? strerrorname_np(err) : "none");
	return 0;
}

static int inodes(const char *dir, long max)
{
	char path[512];
	long n = 0;
	int err = 0;
	mkdir(dir, 0755);
	for (; n < max; n++) {
		if (n % 10000 == 0) { /* keep directories small so lookups stay fast */
			snprintf(path, sizeof(path), "%s/%ld", dir, n / 10000);
			if (mkdir(path, 0755) < 0) {
				err = errno;
				break;
			}
		}
		snprintf(path, sizeof(path), "%s/%ld/%ld", dir, n / 10000, n);
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		if (fd < 0) {
			err = errno;
			break;
		}
		close(fd);
	}
	printf("inodes %ld errno %s\n", n, err ? strerrorname_np(err) : "none");
	return 0;
}

int main(int argc, char **argv)
{
	const char *a = argc > 1 ? argv[1] : "";
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(a, "fork") && argc > 2)
		fork_bomb(atol(argv[2]));
	if (!strcmp(a, "mem") && argc > 2)
		return mem_bomb(atol(argv[2]));
	if (!strcmp(a, "fill") && argc > 3)
		return fill(argv[2], atol(argv[3]));
	if (!strcmp(a, "inodes") && argc > 3)
		return inodes(argv[2], atol(argv[3]));
	fprintf(stderr, "usage: bombs fork MAX | mem MIB | fill PATH MIB | inodes DIR N\n");
	return 125;
}
