/* Attempts to change the host kernel from inside a container: sysctls, cgroups, keys, new
 * namespaces, mounts (old and new API), modules and device nodes. Usage: kernel <attack> [args]. */
#include "common.h"

#include <dirent.h>
#include <linux/keyctl.h>
#include <linux/reboot.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#define SYS_move_mount 429
#define SYS_fsopen 430
#define SYS_fsconfig 431
#define SYS_fsmount 432
#define SYS_fspick 433
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x80
#endif

/* Write `value` to `path`; a write that lands is a hole. */
static void try_write(const char *path, const char *value)
{
	char what[512];
	int fd = open(path, O_WRONLY);
	snprintf(what, sizeof(what), "write %s", path);
	if (fd < 0) {
		if (errno == ENOENT)
			printf("absent %s\n", path);
		else
			blocked(what, errno);
		return;
	}
	if (write(fd, value, strlen(value)) < 0)
		blocked(what, errno);
	else
		hole(what, "wrote %s", value);
	close(fd);
}

static const char *const sysctls[] = {
	"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/kernel/hostname",
	"/proc/sys/kernel/panic", "/proc/sys/vm/drop_caches", "/proc/sys/fs/binfmt_misc/register",
	"/proc/sys/net/ipv4/ip_forward", "/proc/sysrq-trigger", "/sys/kernel/uevent_helper",
	"/sys/kernel/mm/transparent_hugepage/enabled", "/sys/power/state", NULL,
};

static int attack_sysctl(void)
{
	/* the values are chosen to be visible and harmless; the test restores any that land */
	for (const char *const *p = sysctls; *p; p++)
		try_write(*p, strstr(*p, "sysrq") ? "h" : strstr(*p, "drop_caches") ? "1" :
			      strstr(*p, "panic") || strstr(*p, "ip_forward") ? "0" :
			      strstr(*p, "hostname") ? "sandkit-attack" : "|/sandkit-attack %p");
	/* make them writable first: remount, unmount the read-only bind, mount a fresh proc */
	expect_fail("remount /proc/sys read-write",
		    mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL), 0);
	expect_fail("umount /proc/sys", umount2("/proc/sys", MNT_DETACH), 0);
	expect_fail("umount /proc/acpi", umount2("/proc/acpi", MNT_DETACH), 0);
	expect_fail("remount /sys read-write", mount(NULL, "/sys", NULL, MS_REMOUNT, NULL), 0);
	mkdir("/tmp/proc2", 0700);
	expect_fail("mount a new proc", mount("proc", "/tmp/proc2", "proc", 0, NULL), 0);
	try_write("/tmp/proc2/sys/kernel/core_pattern", "|/sandkit-attack %p");
	return finish();
}

/* CVE-2022-0492: mount a cgroup v1 hierarchy (after unshare if need be), set release_agent. */
static int attack_cgroup(void)
{
	static const char *const subsys[] = { "memory", "rdma", "pids", "devices", NULL };
	mkdir("/tmp/cg", 0700);
	for (const char *const *s = subsys; *s; s++) {
		char what[64];
		snprintf(what, sizeof(what), "mount cgroup v1 %s", *s);
		if (mount("cgroup", "/tmp/cg", "cgroup", 0, *s) == 0) {
			hole(what, "mounted");
			try_write("/tmp/cg/release_agent", "/sandkit-attack");
			try_write("/tmp/cg/notify_on_release", "1");
			umount2("/tmp/cg", MNT_DETACH);
		} else {
			blocked(what, errno);
		}
	}
	expect_fail("mount cgroup2", mount("cgroup2", "/tmp/cg", "cgroup2", 0, NULL), 0);
	pid_t pid = fork();
	if (pid == 0) {
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP) < 0) {
			blocked("unshare(user|mount|cgroup) before mounting cgroupfs", errno);
			_exit(finish());
		}
		hole("unshare(user|mount|cgroup)", "succeeded");
		if (mount("cgroup", "/tmp/cg", "cgroup", 0, "rdma") == 0) {
			hole("mount cgroup v1 in a new user namespace", "mounted");
			try_write("/tmp/cg/release_agent", "/sandkit-attack");
		}
		_exit(finish());
	}
	int status = 0;
	waitpid(pid, &status, 0);
	holes += WIFEXITED(status) ? WEXITSTATUS(status) : 1;
	/* and any release_agent already in sight */
	DIR *d = opendir("/sys/fs/cgroup");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char path[600];
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/release_agent", e->d_name);
		if (access(path, F_OK) == 0)
			try_write(path, "/sandkit-attack");
	}
	if (d)
		closedir(d);
	return finish();
}

/* The kernel keyring is not namespaced: keys of other containers and of the host live there. */
static int attack_keyctl(void)
{
	expect_fail("add_key",
		    syscall(SYS_add_key, "user", "sandkit-attack", "secret", 6, KEY_SPEC_USER_KEYRING), 0);
	expect_fail("keyctl join session keyring",
		    syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "sandkit-attack"), 0);
	expect_fail("keyctl read user keyring",
		    syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0), 0);
	expect_fail("request_key",
		    syscall(SYS_request_key, "user", "sandkit-attack", NULL, KEY_SPEC_SESSION_KEYRING), 0);
	return finish();
}

static int child_fn(void *arg)
{
	(void)arg;
	_exit(0);
}

/* New namespaces inside the container: a nested user namespace gives back every capability over
 * it, and with it a much larger kernel attack surface. */
static int attack_userns(void)
{
	static const struct { int flag; const char *name; } ns[] = {
		{ CLONE_NEWUSER, "user" }, { CLONE_NEWNS, "mount" }, { CLONE_NEWPID, "pid" },
		{ CLONE_NEWNET, "net" }, { CLONE_NEWUTS, "uts" }, { CLONE_NEWIPC, "ipc" },
		{ CLONE_NEWCGROUP, "cgroup" }, { CLONE_NEWTIME, "time" }, { 0, NULL },
	};
	static char stack[65536];
	char what[96];
	for (int k = 0; ns[k].name; k++) {
		pid_t pid = fork();
		if (pid == 0) /* unshare changes the caller: do it in a throwaway child */
			_exit(unshare(ns[k].flag) == 0 ? 0 : errno);
		int status = 0;
		waitpid(pid, &status, 0);
		snprintf(what, sizeof(what), "unshare(CLONE_NEW%s)", ns[k].name);
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			hole(what, "succeeded");
		else
			blocked(what, WIFEXITED(status) ? WEXITSTATUS(status) : 0);

		/* clone() has no room for CLONE_NEWTIME (it is a CSIGNAL bit there): clone3 only */
		snprintf(what, sizeof(what), "clone(CLONE_NEW%s)", ns[k].name);
		pid = ns[k].flag == CLONE_NEWTIME ? (errno = EINVAL, -1) : clone(child_fn, stack + sizeof(stack), ns[k].flag | SIGCHLD, NULL);
		if (pid > 0) {
			hole(what, "child %d", pid);
			waitpid(pid, NULL, 0);
		} else {
			blocked(what, errno);
		}

		struct { unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack,
			 stack_size, tls; } args = { .flags = (unsigned)ns[k].flag, .exit_signal = SIGCHLD };
		snprintf(what, sizeof(what), "clone3(CLONE_NEW%s)", ns[k].name);
		long rc = syscall(SYS_clone3, &args, sizeof(args));
		if (rc == 0)
			_exit(0);
		if (rc > 0) {
			hole(what, "child %ld", rc);
			waitpid((pid_t)rc, NULL, 0);
		} else {
			blocked(what, errno);
		}
	}
	/* setns into the init's namespaces (ours already, but the call itself must be refused) */
	int fd = open("/proc/1/ns/mnt", O_RDONLY);
	if (fd >= 0) {
		expect_fail("setns(/proc/1/ns/mnt)", setns(fd, 0), 0);
		close(fd);
	} else {
		blocked("open /proc/1/ns/mnt", errno);
	}
	return finish();
}

/* Mounts through the old and the new mount API. */
static int attack_mount(void)
{
	mkdir("/tmp/m", 0700);
	expect_fail("mount tmpfs", mount("tmpfs", "/tmp/m", "tmpfs", 0, NULL), 0);
	expect_fail("bind-mount /", mount("/", "/tmp/m", NULL, MS_BIND | MS_REC, NULL), 0);
	expect_fail("remount / read-write", mount(NULL, "/", NULL, MS_REMOUNT, NULL), 0);
	expect_fail("make / shared", mount(NULL, "/", NULL, MS_SHARED | MS_REC, NULL), 0);
	expect_fail("umount /proc", umount2("/proc", MNT_DETACH), 0);
	expect_fail("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp/m"), 0);
	expect_fail("fsopen(tmpfs)", syscall(SYS_fsopen, "tmpfs", 0), 1);
	expect_fail("fsopen(proc)", syscall(SYS_fsopen, "proc", 0), 1);
	expect_fail("fspick(/proc/sys)", syscall(SYS_fspick, AT_FDCWD, "/proc/sys", 0), 1);
	expect_fail("open_tree(/, CLONE)", syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */), 1);
	int t = (int)syscall(SYS_open_tree, AT_FDCWD, "/proc", 0);
	if (t >= 0) {
		expect_fail("move_mount(/proc -> /tmp/m)",
			    syscall(SYS_move_mount, t, "", AT_FDCWD, "/tmp/m", 4 /* F_EMPTY_PATH */), 0);
		close(t);
	} else {
		blocked("open_tree(/proc)", errno);
	}
	struct { unsigned long long set, clr, prop, userns; } attr = { .clr = 1 /* MOUNT_ATTR_RDONLY */ };
	expect_fail("mount_setattr(/proc/sys, clear rdonly)",
		    syscall(SYS_mount_setattr, AT_FDCWD, "/proc/sys", 0, &attr, sizeof(attr)), 0);
	return finish();
}

/* Kernel code from inside: modules, kexec, eBPF, perf, raw I/O ports, reboot. */
static int attack_modules(void)
{
	static char image[64] = "\177ELF";
	int fd = open("/proc/self/exe", O_RDONLY);
	expect_fail("init_module", syscall(SYS_init_module, image, sizeof(image), ""), 0);
	expect_fail("finit_module", syscall(SYS_finit_module, fd, "", 0), 0);
	expect_fail("delete_module(loop)", syscall(SYS_delete_module, "loop", O_NONBLOCK), 0);
	expect_fail("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0), 0);
	expect_fail("kexec_file_load", syscall(SYS_kexec_file_load, fd, fd, 0, "", 0), 0);
	expect_fail("iopl(3)", syscall(SYS_iopl, 3), 0);
	expect_fail("ioperm", syscall(SYS_ioperm, 0x80, 1, 1), 0);
	/* ctrl-alt-del on: the kernel default, so a hole here changes nothing */
	expect_fail("reboot(CAD_ON)", syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
					       LINUX_REBOOT_CMD_CAD_ON, NULL), 0);
	unsigned char insns[16] = { 0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0 };
	struct { unsigned int type, cnt; unsigned long long insns, license; unsigned char rest[100]; }
		attr = { 1 /* socket filter */, 2, (unsigned long long)insns, (unsigned long long)"GPL", { 0 } };
	expect_fail("bpf(PROG_LOAD)", syscall(SYS_bpf, 5 /* BPF_PROG_LOAD */, &attr, sizeof(attr)), 1);
	close(fd);
	return finish();
}

/* Device nodes: CAP_MKNOD is in Docker's default set, so mknod itself may work; what must not
 * work is *opening* a device the container was not given. argv: the host root disk major:minor. */
static int attack_mknod(unsigned blk_major, unsigned blk_minor)
{
	static const struct { const char *name; mode_t type; unsigned ma, mi; int flags; } devs[] = {
		{ "disk", S_IFBLK, 0, 0, O_RDONLY },      /* filled in from argv */
		{ "kmsg", S_IFCHR, 1, 11, O_WRONLY },     /* the host's kernel log */
		{ "mem", S_IFCHR, 1, 1, O_RDONLY },       /* physical memory */
		{ "port", S_IFCHR, 1, 4, O_RDONLY },      /* I/O ports */
		{ "tty1", S_IFCHR, 4, 1, O_WRONLY },      /* the host's virtual console */
		{ "console", S_IFCHR, 5, 1, O_WRONLY },
		{ "kvm", S_IFCHR, 10, 232, O_RDWR },
		{ "loop-control", S_IFCHR, 10, 237, O_RDWR },
		{ "fuse", S_IFCHR, 10, 229, O_RDWR },
		{ "tun", S_IFCHR, 10, 200, O_RDWR },
	};
	static const char *const dirs[] = { "/tmp", "/dev", "/dev/shm", NULL };
	for (const char *const *dir = dirs; *dir; dir++) {
		for (size_t k = 0; k < sizeof(devs) / sizeof(devs[0]); k++) {
			char path[128], what[256];
			unsigned ma = k == 0 ? blk_major : devs[k].ma, mi = k == 0 ? blk_minor : devs[k].mi;
			snprintf(path, sizeof(path), "%s/sk-%s", *dir, devs[k].name);
			unlink(path);
			if (mknod(path, devs[k].type | 0600, makedev(ma, mi)) < 0) {
				snprintf(what, sizeof(what), "mknod %s (%u:%u)", path, ma, mi);
				blocked(what, errno);
				continue;
			}
			snprintf(what, sizeof(what), "open %s (%u:%u)", path, ma, mi);
			int fd = open(path, devs[k].flags | O_NONBLOCK | O_NOCTTY);
			if (fd < 0) {
				blocked(what, errno);
			} else {
				char buf[512];
				ssize_t n;
				if (strcmp(devs[k].name, "kmsg") == 0)
					n = write(fd, "sandkit-attack-kmsg\n", 20);
				else if (devs[k].flags == O_RDONLY)
					n = read(fd, buf, sizeof(buf));
				else
					n = 0;
				hole(what, "opened a host device, read/write returned %zd", n);
				close(fd);
			}
			unlink(path);
		}
	}
	/* the devices the container was given are usable */
	int z = open("/dev/zero", O_RDONLY);
	if (z < 0)
		hole("open /dev/zero", "the container's own devices are broken: %s", strerror(errno));
	else
		close(z);
	return finish();
}

int main(int argc, char **argv)
{
	const char *a = argc > 1 ? argv[1] : "";
	if (!strcmp(a, "sysctl"))
		return attack_sysctl();
	if (!strcmp(a, "cgroup"))
		return attack_cgroup();
	if (!strcmp(a, "keyctl"))
		return attack_keyctl();
	if (!strcmp(a, "userns"))
		return attack_userns();
	if (!strcmp(a, "mount"))
		return attack_mount();
	if (!strcmp(a, "modules"))
		return attack_modules();
	if (!strcmp(a, "mknod") && argc > 3)
		return attack_mknod((unsigned)atoi(argv[2]), (unsigned)atoi(argv[3]));
	fprintf(stderr, "usage: kernel sysctl|cgroup|keyctl|userns|mount|modules|mknod MAJ MIN\n");
	return 125;
}
