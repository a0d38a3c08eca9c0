/* setflags +i|+a|-ia PATH: chattr's job for the attacks (the busybox image has no chattr):
 * make a file immutable or append-only, or clear both. Needs CAP_LINUX_IMMUTABLE. */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int fd, flags;

	if (argc != 3)
		return fprintf(stderr, "usage: setflags +i|+a|-ia PATH\n"), 2;
	fd = open(argv[2], O_RDONLY | O_NONBLOCK | O_NOFOLLOW);
	if (fd < 0 || ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0)
		return perror(argv[2]), 1;
	if (strcmp(argv[1], "+i") == 0)
		flags |= FS_IMMUTABLE_FL;
	else if (strcmp(argv[1], "+a") == 0)
		flags |= FS_APPEND_FL;
	else
		flags &= ~(FS_IMMUTABLE_FL | FS_APPEND_FL);
	if (ioctl(fd, FS_IOC_SETFLAGS, &flags) < 0)
		return perror(argv[1]), 1;
	return 0;
}
