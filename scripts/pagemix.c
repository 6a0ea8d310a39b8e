/*
 * pagemix: hold guest memory allocated along many kernel paths, for the
 * scale benchmark (scripts/bench_scale.py).
 *
 * page_owner keys each record by its allocation stack; a busybox guest that
 * only writes tmpfs has about 300 of them.  A production machine has
 * thousands, from many syscalls, slab caches, sockets, page tables and
 * faults taken inside the kernel.  pagemix reproduces that spread, and keeps
 * everything it allocated until it is killed (it pauses once set up).
 * Built static on the host by scripts/testvm.py helper(), never committed.
 *
 *   pagemix paths [-n NAME]          many kernel paths, a few pages each
 *   pagemix anon  -m MIB [-n NAME]   anonymous memory, touched from user space
 *   pagemix pipes -m MIB [-n NAME]   pages queued in pipes nobody reads
 *   pagemix socks -m MIB [-n NAME]   skbs queued on unix sockets nobody reads
 *   pagemix files -d DIR -c COUNT [-n NAME]   COUNT small files (dentries,
 *                                    inodes, one page each)
 *
 * With -n the process (and the children "paths" forks) is renamed, so
 * `top --by pid/comm` sees distinct tasks.  With -p the process runs under a
 * NUMA memory policy over nodes 0 and 1 (numactl's): default, interleave,
 * preferred-many or bind.  alloc_pages() and vma_alloc_folio() take another
 * branch under interleave and preferred-many (alloc_page_interleave(),
 * alloc_pages_preferred_many()), so each policy gives the same kernel paths
 * stacks of their own, as numactl-run databases do on production machines.  "ready" on stdout once set up;
 * then the process pauses (run it in the background).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/ip_icmp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <linux/perf_event.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/times.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096L
#define PMD (2L << 20)

static void usage(void)
{
	fprintf(stderr, "usage: pagemix paths|anon|pipes|socks|files [-n NAME] [-p POLICY] [-m MIB] [-d DIR] "
		"[-c COUNT]\n");
	exit(2);
}

static void more_files(void)
{
	struct rlimit r = { 1 << 20, 1 << 20 };

	if (setrlimit(RLIMIT_NOFILE, &r)) {
		getrlimit(RLIMIT_NOFILE, &r);
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_NOFILE, &r);
	}
}

static void hold(void)
{
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}

/* -- pages the kernel faults in while a syscall writes to user memory ---------------- */

/* Untouched anonymous memory, handed out a page at a time; fresh_pmd() moves
 * to the next 2 MiB so its first fault also allocates a page table page. */
static char *arena, *cursor, *arena_end;

static void fresh_pmd(void)
{
	cursor = (char *)(((unsigned long)cursor + PMD - 1) & ~(PMD - 1));
	if (cursor >= arena_end)
		cursor = NULL;
}

static void *fresh(void)
{
	static char spare[2 * PAGE];
	char *p = cursor;

	if (!p || p + PAGE > arena_end)
		return (void *)(((unsigned long)spare + PAGE - 1) & ~(PAGE - 1));
	cursor += PAGE;
	return p;
}

static int tmp_fd(const char *dir, long size)
{
	char path[256];
	static int n;
	int fd;

	snprintf(path, sizeof(path), "%s/pagemix-%d-%d", dir, getpid(), n++);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0 && size && ftruncate(fd, size) == 0) {
		char *buf = calloc(1, size);

		if (buf) {
			memset(buf, 'x', size);
			if (pwrite(fd, buf, size, 0) < 0)
				perror("pwrite");
			free(buf);
		}
	}
	return fd;
}

/* Each "sink" is a syscall that writes into its user buffer; called on fresh
 * pages, each takes a page fault in the kernel, a stack of its own. */
static void sinks(int rounds)
{
	int pfd[2], sp[2], dg[2], efd, tfd, sfd, ep, fd, zero, urnd, self, devnull;
	struct itimerspec its = { { 0, 0 }, { 1000, 0 } };
	sigset_t mask;
	const char *procfiles[] = { "/proc/self/stat", "/proc/self/status", "/proc/meminfo", "/proc/self/maps",
				    "/proc/self/cmdline", "/proc/self/environ", "/proc/self/auxv", "/proc/self/pagemap",
				    "/proc/self/mem", "/proc/vmstat", "/proc/zoneinfo", "/proc/buddyinfo",
				    "/proc/kallsyms", "/proc/self/smaps", "/proc/self/wchan", "/proc/self/limits",
				    "/sys/devices/system/node/node0/meminfo", "/sys/kernel/mm/page_idle/bitmap",
				    "/dev/kmsg", "/proc/self/mountinfo", "/proc/self/io", "/sys/kernel/debug/page_owner",
				    "/proc/self/stack", "/proc/self/syscall", "/proc/self/statm", "/proc/cpuinfo",
				    "/proc/interrupts", "/proc/slabinfo", "/proc/self/fdinfo/0", "/proc/filesystems",
				    "/sys/firmware/acpi/tables/DSDT", "/proc/self/numa_maps", NULL };

	if (pipe(pfd) || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg))
		return;
	efd = eventfd(5, EFD_NONBLOCK);
	tfd = timerfd_create(CLOCK_MONOTONIC, 0);
	timerfd_settime(tfd, 0, &its, NULL);
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_NONBLOCK);
	ep = epoll_create1(0);
	{
		struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.fd = sp[0] };

		epoll_ctl(ep, EPOLL_CTL_ADD, sp[0], &ev);
	}
	fd = tmp_fd("/tmp", 64 * PAGE);
	zero = open("/dev/zero", O_RDONLY);
	urnd = open("/dev/urandom", O_RDONLY);
	self = open("/proc/self/stat", O_RDONLY);
	devnull = open("/dev/null", O_RDWR);
	for (int r = 0; r < rounds; r++) {
		char *b;
		struct iovec iov;
		struct msghdr msg;

#define SINK(call) do { fresh_pmd(); for (int k = 0; k < 2; k++) { b = fresh(); (void)(call); } } while (0)
		SINK(read(zero, b, PAGE));
		SINK(read(urnd, b, 256));
		SINK(pread(fd, b, PAGE, 0));
		SINK((iov = (struct iovec){ b, PAGE }, readv(fd, &iov, 1)));
		SINK((iov = (struct iovec){ b, PAGE }, preadv(fd, &iov, 1, PAGE)));
		SINK((lseek(fd, 0, SEEK_SET), read(fd, b, PAGE)));
		SINK((write(pfd[1], "pipe", 4), read(pfd[0], b, 4)));
		SINK((write(sp[1], "stream", 6), read(sp[0], b, 6)));
		SINK((write(sp[1], "stream", 6), recv(sp[0], b, 6, 0)));
		SINK((send(dg[1], "dgram", 5, 0), recvfrom(dg[0], b, 5, 0, NULL, NULL)));
		SINK((send(dg[1], "dgram", 5, 0), iov = (struct iovec){ b, 5 },
		      msg = (struct msghdr){ .msg_iov = &iov, .msg_iovlen = 1 }, recvmsg(dg[0], &msg, 0)));
		SINK(read(efd, b, 8));
		SINK(write(efd, "\1\0\0\0\0\0\0\0", 8));
		SINK(timerfd_gettime(tfd, (struct itimerspec *)b));
		SINK((kill(getpid(), SIGUSR1), read(sfd, b, sizeof(struct signalfd_siginfo))));
		SINK(epoll_wait(ep, (struct epoll_event *)b, 4, 0));
		SINK((((struct pollfd *)b)->fd = sp[0], ((struct pollfd *)b)->events = POLLIN, poll((struct pollfd *)b, 1, 0)));
		SINK(fstat(fd, (struct stat *)b));
		SINK(stat("/tmp", (struct stat *)b));
		SINK(lstat("/proc/self/exe", (struct stat *)b));
		SINK(syscall(SYS_statx, AT_FDCWD, "/", 0, 0x7ff, b));
		SINK(statfs("/tmp", (struct statfs *)b));
		SINK(fstatfs(fd, (struct statfs *)b));
		SINK(uname((struct utsname *)b));
		SINK(sysinfo((struct sysinfo *)b));
		SINK(getrusage(RUSAGE_SELF, (struct rusage *)b));
		SINK(times((struct tms *)b));
		SINK(syscall(SYS_getcwd, b, PAGE));
		SINK(readlink("/proc/self/exe", b, PAGE));
		SINK(syscall(SYS_getresuid, b, b + 4, b + 8));
		SINK(getgroups(1, (gid_t *)b));
		SINK(sched_getaffinity(0, 128, (cpu_set_t *)b));
		SINK(getrlimit(RLIMIT_STACK, (struct rlimit *)b));
		SINK(prlimit(0, RLIMIT_NOFILE, NULL, (struct rlimit *)b));
		SINK(sigprocmask(SIG_BLOCK, NULL, (sigset_t *)b));
		SINK(sigpending((sigset_t *)b));
		SINK(syscall(SYS_clock_gettime, CLOCK_MONOTONIC, b));
		SINK(syscall(SYS_clock_getres, CLOCK_MONOTONIC, b));
		SINK(syscall(SYS_gettimeofday, b, NULL));
		SINK(syscall(SYS_time, b));
		SINK(pipe((int *)b) == 0 ? (close(((int *)b)[0]), close(((int *)b)[1])) : 0);
		SINK(socketpair(AF_UNIX, SOCK_STREAM, 0, (int *)b) == 0 ? (close(((int *)b)[0]), close(((int *)b)[1])) : 0);
		SINK((*(socklen_t *)(b + 256) = 110, getsockname(sp[0], (struct sockaddr *)b, (socklen_t *)(b + 256))));
		SINK((*(socklen_t *)(b + 256) = 4, getsockopt(sp[0], SOL_SOCKET, SO_RCVBUF, b, (socklen_t *)(b + 256))));
		SINK(ioctl(sp[0], FIONREAD, (int *)b));
		SINK(select(0, (fd_set *)b, NULL, NULL, &(struct timeval){ 0, 0 }));
		SINK(getitimer(ITIMER_REAL, (struct itimerval *)b));
		SINK(getrandom(b, 64, 0));
		SINK(syscall(SYS_sched_getparam, 0, b));
		SINK(syscall(SYS_sched_rr_get_interval, 0, b));
		SINK(syscall(SYS_getcpu, b, b + 4, NULL));
		SINK(prctl(PR_GET_NAME, b));
		SINK(mincore(arena, PMD, (unsigned char *)b));
		SINK(sigaltstack(NULL, (stack_t *)b));
		SINK(syscall(SYS_sched_getattr, 0, b, 56, 0));
		SINK(syscall(SYS_capget, &(int[2]){ 0x20080522, 0 }, b));
		SINK(syscall(SYS_getdents64, open("/proc", O_RDONLY | O_DIRECTORY), b, PAGE));
		SINK(syscall(SYS_getdents64, open("/dev", O_RDONLY | O_DIRECTORY), b, PAGE));
		SINK(syscall(SYS_getdents64, open("/sys/kernel/mm", O_RDONLY | O_DIRECTORY), b, PAGE));
		SINK(syscall(SYS_getdents64, open("/tmp", O_RDONLY | O_DIRECTORY), b, PAGE));
		SINK((iov = (struct iovec){ b, 64 }, process_vm_readv(getpid(), &iov, 1,
								     &(struct iovec){ arena, 64 }, 1, 0)));
		SINK(syscall(SYS_get_mempolicy, b, b + 64, 64, NULL, 0));
		for (const char **p = procfiles; *p; p++) {
			int pf = open(*p, O_RDONLY);

			if (pf < 0)
				continue;
			if (!strcmp(*p, "/proc/self/pagemap") || !strcmp(*p, "/proc/self/mem"))
				lseek(pf, (off_t)(unsigned long)arena / ((*p)[12] == 'p' ? PAGE / 8 : 1), SEEK_SET);
			SINK(read(pf, b, PAGE));
			close(pf);
		}
		/* Kernel writes into a file-backed shared mapping of tmpfs. */
		{
			int f1 = tmp_fd("/tmp", 0), f2 = tmp_fd("/tmp", 16 * PAGE);
			char *m = ftruncate(f1, 16 * PAGE) ? MAP_FAILED :
				  mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f1, 0);

			if (m != MAP_FAILED) {
				m[0] = 1;
				read(zero, m + PAGE, PAGE);
				pread(f2, m + 2 * PAGE, PAGE, 0);
			}
		}
		(void)devnull;
	}
	(void)self;
}

/* -- writes into tmpfs, pipes and sockets along different syscalls ----------------------- */

static void writers(void)
{
	char *buf = malloc(64 * PAGE);
	int pfd[2], sp[2];
	struct iovec iov[4];
	int fd = tmp_fd("/tmp", 0), fd2, null = open("/dev/null", O_WRONLY);

	memset(buf, 'w', 64 * PAGE);
	for (int i = 0; i < 4; i++)
		iov[i] = (struct iovec){ buf + i * PAGE, PAGE };
	write(fd, buf, 16 * PAGE);
	pwrite(fd, buf, 16 * PAGE, 64 * PAGE);
	writev(fd, iov, 4);
	pwritev(fd, iov, 4, 128 * PAGE);
	fallocate(fd, 0, 256 * PAGE, 16 * PAGE);
	fallocate(fd, FALLOC_FL_KEEP_SIZE, 512 * PAGE, 16 * PAGE);
	ftruncate(fd, 1024 * PAGE);
	{
		char *m = mmap(NULL, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 600 * PAGE);

		if (m != MAP_FAILED) {
			for (int i = 0; i < 32; i++)
				m[i * PAGE] = 1;
			for (int i = 32; i < 64; i++)
				(void)*(volatile char *)(m + i * PAGE);
			madvise(m, 64 * PAGE, MADV_POPULATE_WRITE);
		}
	}
	fd2 = tmp_fd("/tmp", 0);
	if (!pipe(pfd)) {
		fcntl(pfd[1], F_SETPIPE_SZ, 1 << 20);
		write(pfd[1], buf, 16 * PAGE);
		splice(pfd[0], NULL, fd2, NULL, 16 * PAGE, 0);           /* pipe -> tmpfs */
		writev(pfd[1], iov, 4);
		lseek(fd, 0, SEEK_SET);
		splice(fd, NULL, pfd[1], NULL, 16 * PAGE, 0);            /* tmpfs -> pipe */
		vmsplice(pfd[1], iov, 4, 0);
		tee(pfd[0], pfd[1], PAGE, SPLICE_F_NONBLOCK);
	}
	{
		off_t off = 0;
		int fd3 = tmp_fd("/tmp", 0);

		sendfile(fd3, fd, &off, 32 * PAGE);                     /* tmpfs -> tmpfs */
		off = 0;
		copy_file_range(fd, &off, fd2, &(off_t){ 1 << 20 }, 32 * PAGE, 0);
		{
			int mfd = memfd_create("pagemix", MFD_ALLOW_SEALING);

			write(mfd, buf, 32 * PAGE);
			fallocate(mfd, 0, 64 * PAGE, 32 * PAGE);
		}
		{
			int tfd = open("/tmp", O_TMPFILE | O_RDWR, 0600);

			write(tfd, buf, 16 * PAGE);
		}
	}
	if (!socketpair(AF_UNIX, SOCK_STREAM, 0, sp)) {
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 4 };

		setsockopt(sp[1], SOL_SOCKET, SO_SNDBUF, &(int){ 4 << 20 }, 4);
		write(sp[1], buf, 100);
		write(sp[1], buf, 8 * PAGE);
		send(sp[1], buf, 32 * PAGE, MSG_DONTWAIT);
		sendmsg(sp[1], &msg, MSG_DONTWAIT);
		lseek(fd, 0, SEEK_SET);
		sendfile(sp[1], fd, NULL, 16 * PAGE);
		splice(pfd[0], NULL, sp[1], NULL, 4 * PAGE, SPLICE_F_NONBLOCK);
	}
	for (int type = 0; type < 2; type++) {
		int d[2];

		if (socketpair(AF_UNIX, type ? SOCK_SEQPACKET : SOCK_DGRAM, 0, d))
			continue;
		setsockopt(d[1], SOL_SOCKET, SO_SNDBUF, &(int){ 4 << 20 }, 4);
		for (int size = 64; size <= 64 * PAGE; size *= 4)
			send(d[1], buf, size, MSG_DONTWAIT);
	}
	/* SCM_RIGHTS: a file in flight. */
	if (!socketpair(AF_UNIX, SOCK_DGRAM, 0, sp)) {
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 1, .msg_control = cbuf,
				      .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
		sendmsg(sp[1], &msg, 0);
	}
	(void)null;
}

/* -- slab growth along different paths: objects kept ------------------------------------- */

static void objects(const char *dir, int n)
{
	char path[512];
	int d[2];

	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/d%d", dir, i);
		mkdir(path, 0700);
	}
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/f%d", dir, i);
		close(open(path, O_CREAT | O_WRONLY, 0600));
	}
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/n%d", dir, i);
		mknod(path, S_IFIFO | 0600, 0);
	}
	for (int i = 0; i < n; i++) {
		char target[64];

		snprintf(path, sizeof(path), "%s/s%d", dir, i);
		snprintf(target, sizeof(target), "a-symlink-target-long-enough-to-be-stored-%d", i);
		symlink(target, path);
	}
	for (int i = 0; i < n; i++) {
		char from[512];

		snprintf(from, sizeof(from), "%s/f%d", dir, i);
		snprintf(path, sizeof(path), "%s/l%d", dir, i);
		link(from, path);
	}
	for (int i = 0; i < n; i++) {
		char to[512];

		snprintf(path, sizeof(path), "%s/n%d", dir, i);
		snprintf(to, sizeof(to), "%s/renamed-with-a-longer-name-than-inline-%d", dir, i);
		rename(path, to);
	}
	for (int i = 0; i < n / 4; i++) {
		snprintf(path, sizeof(path), "%s/missing-%d", dir, i);
		(void)access(path, F_OK);  /* negative dentries */
	}
	for (int i = 0; i < n; i++)
		open("/tmp", O_TMPFILE | O_RDWR, 0600);
	for (int i = 0; i < n; i++)
		memfd_create("pagemix-object", 0);
	for (int i = 0; i < n / 2; i++)
		if (pipe(d))
			break;
	for (int i = 0; i < n / 2; i++)
		if (socketpair(AF_UNIX, i & 1 ? SOCK_STREAM : SOCK_DGRAM, 0, d))
			break;
	for (int i = 0; i < n / 4; i++) {
		socket(AF_UNIX, SOCK_STREAM, 0);
		socket(AF_INET, SOCK_DGRAM, 0);
		socket(AF_INET, SOCK_STREAM, 0);
	}
	for (int i = 0; i < n / 4; i++) {
		eventfd(0, 0);
		timerfd_create(CLOCK_MONOTONIC, 0);
		epoll_create1(0);
	}
	{
		int ep = epoll_create1(0), p[2];

		for (int i = 0; i < n / 2 && !pipe(p); i++)
			epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &(struct epoll_event){ .events = EPOLLIN });
	}
	/* A listening unix socket with connections accepted. */
	{
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		int l = socket(AF_UNIX, SOCK_STREAM, 0);

		snprintf(a.sun_path, sizeof(a.sun_path), "%.90s/listener", dir);
		if (l >= 0 && !bind(l, (struct sockaddr *)&a, sizeof(a)) && !listen(l, 4096)) {
			for (int i = 0; i < n / 8; i++) {
				int c = socket(AF_UNIX, SOCK_STREAM, 0);

				if (connect(c, (struct sockaddr *)&a, sizeof(a)))
					break;
				accept(l, NULL, NULL);
			}
		}
	}
	/* VMAs: many mappings, split by mprotect. */
	for (int i = 0; i < n / 4; i++) {
		char *m = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (m == MAP_FAILED)
			break;
		m[0] = 1;
		mprotect(m + PAGE, PAGE, PROT_READ);
	}
}

/* -- bpf maps and perf buffers: their own allocators ------------------------------------- */

static void bpf_maps(void)
{
	static const struct { int type, key, value, max, flags; } maps[] = {
		{ BPF_MAP_TYPE_ARRAY, 4, 64, 4096, 0 },
		{ BPF_MAP_TYPE_ARRAY, 4, 4096, 256, 0 },
		{ BPF_MAP_TYPE_ARRAY, 4, 64, 4096, BPF_F_MMAPABLE },
		{ BPF_MAP_TYPE_HASH, 8, 64, 4096, 0 },
		{ BPF_MAP_TYPE_HASH, 8, 64, 4096, BPF_F_NO_PREALLOC },
		{ BPF_MAP_TYPE_LRU_HASH, 8, 64, 4096, 0 },
		{ BPF_MAP_TYPE_PERCPU_ARRAY, 4, 64, 1024, 0 },
		{ BPF_MAP_TYPE_PERCPU_HASH, 8, 64, 1024, 0 },
		{ BPF_MAP_TYPE_LPM_TRIE, 8, 8, 1024, BPF_F_NO_PREALLOC },
		{ BPF_MAP_TYPE_QUEUE, 0, 64, 4096, 0 },
		{ BPF_MAP_TYPE_STACK, 0, 64, 4096, 0 },
		{ BPF_MAP_TYPE_RINGBUF, 0, 0, 1 << 20, 0 },
		{ BPF_MAP_TYPE_BLOOM_FILTER, 0, 8, 65536, 0 },
		{ BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 4096, 0 },
		{ BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, 64, 0 },
		{ BPF_MAP_TYPE_STACK_TRACE, 4, 8 * 127, 1024, 0 },
		{ BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, 64, 0 },
	};
	int inner = -1;

	for (unsigned i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		union bpf_attr a;
		int fd;

		memset(&a, 0, sizeof(a));
		a.map_type = maps[i].type;
		a.key_size = maps[i].key;
		a.value_size = maps[i].value;
		a.max_entries = maps[i].max;
		a.map_flags = maps[i].flags;
		if (maps[i].type == BPF_MAP_TYPE_LPM_TRIE)
			a.key_size = 8;
		if (maps[i].type == BPF_MAP_TYPE_ARRAY_OF_MAPS)
			a.inner_map_fd = inner;
		fd = syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof(a));
		if (fd < 0)
			continue;
		if (inner < 0)
			inner = fd;
		if (maps[i].type == BPF_MAP_TYPE_HASH || maps[i].type == BPF_MAP_TYPE_LRU_HASH ||
		    maps[i].type == BPF_MAP_TYPE_PERCPU_HASH || maps[i].type == BPF_MAP_TYPE_LPM_TRIE) {
			char key[8] = { 0 }, value[256] = { 0 };

			for (int k = 0; k < 2048; k++) {
				union bpf_attr u;

				if (maps[i].type == BPF_MAP_TYPE_LPM_TRIE) {
					*(int *)key = 32;
					*(int *)(key + 4) = k << 8;
				} else {
					*(int *)key = k;
				}
				memset(&u, 0, sizeof(u));
				u.map_fd = fd;
				u.key = (unsigned long)key;
				u.value = (unsigned long)value;
				syscall(SYS_bpf, BPF_MAP_UPDATE_ELEM, &u, sizeof(u));
			}
		}
		if (maps[i].flags == BPF_F_MMAPABLE || maps[i].type == BPF_MAP_TYPE_RINGBUF) {
			char *m = mmap(NULL, maps[i].type == BPF_MAP_TYPE_RINGBUF ? PAGE : 64 * PAGE,
				       PROT_READ | (maps[i].type == BPF_MAP_TYPE_RINGBUF ? 0 : PROT_WRITE), MAP_SHARED,
				       fd, 0);

			(void)m;
		}
	}
}

static void perf_buffers(void)
{
	for (int pages = 1; pages <= 64; pages *= 4) {
		struct perf_event_attr a = { .type = PERF_TYPE_SOFTWARE, .size = sizeof(a),
					     .config = PERF_COUNT_SW_CPU_CLOCK, .sample_period = 100000,
					     .sample_type = PERF_SAMPLE_IP };
		int fd = syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);

		if (fd >= 0)
			mmap(NULL, (pages + 1) * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	}
}

/* -- loopback networking: TCP, UDP and ICMP data queued, never read ---------------------- */

static void net(void)
{
	struct ifreq ifr = { .ifr_name = "lo" };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	char *buf = malloc(256 * 1024);
	int ctl = socket(AF_INET, SOCK_DGRAM, 0), l, u1, u2, raw;

	memset(buf, 'n', 256 * 1024);
	if (ctl >= 0 && !ioctl(ctl, SIOCGIFFLAGS, &ifr)) {
		ifr.ifr_flags |= IFF_UP;
		ioctl(ctl, SIOCSIFFLAGS, &ifr);
	}
	l = socket(AF_INET, SOCK_STREAM, 0);
	if (l >= 0 && !bind(l, (struct sockaddr *)&a, sizeof(a)) && !listen(l, 128) &&
	    !getsockname(l, (struct sockaddr *)&a, &len)) {
		for (int i = 0; i < 32; i++) {
			int c = socket(AF_INET, SOCK_STREAM, 0), s;

			if (i & 1)
				setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 }, 4);
			if (connect(c, (struct sockaddr *)&a, sizeof(a)))
				break;
			s = accept(l, NULL, NULL);
			fcntl(c, F_SETFL, O_NONBLOCK);
			fcntl(s, F_SETFL, O_NONBLOCK);
			for (int size = 100; size <= 256 * 1024; size *= 8)
				send(c, buf, size, 0);       /* queued at s, never read */
			send(s, buf, 1000 * (i + 1), MSG_MORE);
			send(s, buf, 100, 0);
			writev(c, (struct iovec[]){ { buf, 3000 }, { buf, 5000 } }, 2);
			send(c, "!", 1, MSG_OOB);
		}
	}
	u1 = socket(AF_INET, SOCK_DGRAM, 0);
	u2 = socket(AF_INET, SOCK_DGRAM, 0);
	a.sin_port = 0;
	len = sizeof(a);
	if (u1 >= 0 && u2 >= 0 && !bind(u1, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(u1, (struct sockaddr *)&a, &len)) {
		setsockopt(u1, SOL_SOCKET, SO_RCVBUF, &(int){ 4 << 20 }, 4);
		for (int size = 64; size <= 60000; size *= 2)
			for (int k = 0; k < 4; k++)
				sendto(u2, buf, size, MSG_DONTWAIT, (struct sockaddr *)&a, sizeof(a));
		connect(u2, (struct sockaddr *)&a, sizeof(a));
		send(u2, buf, 1000, MSG_DONTWAIT);
	}
	raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	if (raw >= 0) {
		struct icmphdr echo = { .type = ICMP_ECHO, .un.echo.id = htons(getpid() & 0xffff) };
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

		for (int k = 0; k < 8; k++) {
			unsigned sum = 0;
			unsigned short *w = (unsigned short *)&echo;

			echo.un.echo.sequence = htons(k);
			echo.checksum = 0;
			for (unsigned i = 0; i < sizeof(echo) / 2; i++)
				sum += w[i];
			sum = (sum >> 16) + (sum & 0xffff);
			echo.checksum = ~(sum + (sum >> 16));
			sendto(raw, &echo, sizeof(echo), 0, (struct sockaddr *)&to, sizeof(to));
		}
	}
}

/* -- files opened and read once, kept open: each open path's private state and a seq buffer */

static void opens(int times)
{
	static const char *files[] = { "/proc/self/maps", "/proc/self/smaps", "/proc/self/status", "/proc/self/stat",
				       "/proc/meminfo", "/proc/self/mountinfo", "/proc/self/mounts", "/proc/vmstat",
				       "/proc/slabinfo", "/proc/zoneinfo", "/proc/kallsyms", "/proc/self/environ",
				       "/proc/self/numa_maps", "/proc/self/limits", "/proc/interrupts", "/proc/cpuinfo",
				       "/sys/devices/system/node/node1/meminfo", "/sys/kernel/mm/page_idle/bitmap",
				       "/dev/kmsg", "/sys/kernel/debug/tracing/available_events",
				       "/sys/kernel/debug/tracing/set_ftrace_filter", "/proc/self/fdinfo/0",
				       "/proc/net/tcp", "/proc/net/unix", "/proc/self/smaps_rollup", "/proc/modules",
				       "/proc/self/wchan", "/proc/self/stack", "/proc/self/syscall", "/proc/self/io",
				       "/proc/self/statm", "/proc/self/cgroup", "/proc/self/sched", "/proc/self/comm",
				       "/proc/self/personality", "/proc/self/timerslack_ns", "/proc/self/mountstats",
				       "/proc/buddyinfo", "/proc/pagetypeinfo", "/proc/vmallocinfo", "/proc/stat",
				       "/proc/uptime", "/proc/version", "/proc/loadavg", "/proc/filesystems",
				       "/proc/devices", "/proc/misc", "/proc/consoles", "/proc/iomem", "/proc/ioports",
				       "/proc/locks", "/proc/softirqs", "/proc/execdomains", "/proc/cgroups",
				       "/proc/net/udp", "/proc/net/raw", "/proc/net/dev", "/proc/net/route",
				       "/proc/net/netstat", "/proc/net/snmp", "/proc/net/sockstat", "/proc/net/arp",
				       "/proc/net/fib_trie", "/proc/net/protocols", "/proc/self/net/ptype",
				       "/sys/kernel/debug/tracing/trace_pipe", "/sys/kernel/debug/tracing/README",
				       "/sys/kernel/debug/tracing/available_tracers",
				       "/sys/kernel/debug/tracing/saved_cmdlines",
				       "/sys/kernel/debug/tracing/printk_formats", "/sys/kernel/debug/tracing/kprobe_events",
				       "/sys/kernel/debug/tracing/dynamic_events", "/sys/kernel/debug/tracing/set_event",
				       "/sys/kernel/debug/tracing/enabled_functions",
				       "/sys/kernel/debug/tracing/available_filter_functions",
				       "/sys/kernel/debug/tracing/events/sched/sched_switch/format",
				       "/sys/kernel/debug/tracing/events/sched/sched_switch/trigger",
				       "/sys/kernel/debug/tracing/events/sched/sched_switch/filter",
				       "/sys/kernel/debug/tracing/per_cpu/cpu0/stats", "/sys/kernel/debug/tracing/trace",
				       "/sys/devices/system/cpu/online", "/sys/devices/system/memory/memory0/state",
				       "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/fs/cgroup/cgroup.procs",
				       "/sys/firmware/acpi/tables/DSDT", "/sys/bus/pci/devices/0000:00:00.0/config",
				       "/sys/bus/pci/devices/0000:00:00.0/resource", "/sys/class/net/lo/statistics/rx_bytes",
				       NULL };
	char c;

	for (const char **f = files; *f; f++)
		for (int i = 0; i < times; i++) {
			int fd = open(*f, O_RDONLY | O_NONBLOCK);

			if (fd < 0)
				break;
			if (strstr(*f, "trace_pipe"))
				break;  /* one reader at a time, and it blocks */
			read(fd, &c, 1);
		}
}

/* -- address space operations ------------------------------------------------------------ */

static void address_space(void)
{
	char *m;

	m = mmap(NULL, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	m = mmap(NULL, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m != MAP_FAILED)
		mlock(m, 64 * PAGE);
	m = mmap(NULL, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m != MAP_FAILED)
		madvise(m, 64 * PAGE, MADV_POPULATE_WRITE);
	m = mmap(NULL, 64 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m != MAP_FAILED) {
		memset(m, 1, 64 * PAGE);
		m = mremap(m, 64 * PAGE, 256 * PAGE, MREMAP_MAYMOVE);
		if (m != MAP_FAILED)
			memset(m + 64 * PAGE, 2, 64 * PAGE);
	}
	m = mmap(NULL, 4 * PMD, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m != MAP_FAILED) {
		for (long off = 0; off < 4 * PMD; off += PMD)
			m[off] = 1;
		mremap(m, 4 * PMD, 4 * PMD, MREMAP_MAYMOVE | MREMAP_FIXED, m + 64 * PMD);
	}
	/* A private file mapping written (copy on write of tmpfs pages). */
	{
		int fd = tmp_fd("/tmp", 32 * PAGE);

		m = mmap(NULL, 32 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		if (m != MAP_FAILED)
			for (int i = 0; i < 32; i++)
				m[i * PAGE] ^= 1;
	}
}

/* Children: copy-on-write after fork, page tables copied, threads' stacks. */
static void family(const char *name)
{
	static char cow[64 * PAGE];

	memset(cow, 1, sizeof(cow));
	for (int i = 0; i < 8; i++) {
		pid_t pid = fork();

		if (pid == 0) {
			char n[16];

			snprintf(n, sizeof(n), "%.9s-kid%d", name, i);
			prctl(PR_SET_NAME, n);
			for (int j = 0; j < 64; j += 1 + i)
				cow[j * PAGE] = 2;          /* wp fault: a copy */
			if (i & 1)
				sinks(1);
			for (;;)
				pause();
		}
	}
}

static int thread_fn(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

static void threads(int n)
{
	for (int i = 0; i < n; i++) {
		char *stack = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (stack == MAP_FAILED)
			break;
		clone(thread_fn, stack + 16 * PAGE, CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
		      CLONE_SYSVSEM, NULL);
	}
}

static void paths(const char *name)
{
	char dir[256];

	more_files();
	arena = mmap(NULL, 1L << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (arena == MAP_FAILED)
		arena = NULL;
	cursor = arena;
	arena_end = arena ? arena + (1L << 30) : NULL;
	sinks(2);
	writers();
	snprintf(dir, sizeof(dir), "/tmp/pagemix-%d", getpid());
	mkdir(dir, 0700);
	objects(dir, 4000);
	bpf_maps();
	perf_buffers();
	net();
	opens(200);
	address_space();
	threads(64);
	family(name);
}

/* -- bulk ---------------------------------------------------------------------------------- */

static void anon(long mib)
{
	long bytes = mib << 20, quarter = bytes / 4;
	char *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED) {
		perror("pagemix: mmap");
		exit(1);
	}
	for (long off = 0; off < 3 * quarter; off += PAGE)
		m[off] = (char)off;  /* user-mode faults */
	madvise(m + 3 * quarter, bytes - 3 * quarter, MADV_POPULATE_WRITE);
}

static void pipes(long mib)
{
	char *buf = malloc(1 << 20);
	long left = mib << 20;

	more_files();
	memset(buf, 'p', 1 << 20);
	while (left > 0) {
		int p[2];
		long n;

		if (pipe2(p, O_NONBLOCK))
			break;
		fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
		n = write(p[1], buf, 1 << 20);
		if (n <= 0)
			break;
		left -= n;
	}
}

static void socks(long mib)
{
	char *buf = malloc(1 << 16);
	long left = mib << 20;

	more_files();
	memset(buf, 's', 1 << 16);
	while (left > 0) {
		int d[2];
		long n, sent = 0;

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, d))
			break;
		setsockopt(d[1], SOL_SOCKET, SO_SNDBUF, &(int){ 4 << 20 }, 4);
		fcntl(d[1], F_SETFL, O_NONBLOCK);
		while (left > 0 && (n = send(d[1], buf, (left < (1 << 16) ? left : 1 << 16), 0)) > 0) {
			left -= n;
			sent += n;
		}
		if (!sent)
			break;
	}
}

static void files(const char *dir, long count)
{
	char path[512], page[PAGE];

	memset(page, 'f', sizeof(page));
	mkdir(dir, 0700);
	for (long i = 0; i < count; i++) {
		int fd;

		if (i % 1000 == 0) {
			snprintf(path, sizeof(path), "%s/%ld", dir, i / 1000);
			mkdir(path, 0700);
		}
		snprintf(path, sizeof(path), "%s/%ld/file-%ld", dir, i / 1000, i);
		fd = open(path, O_CREAT | O_WRONLY, 0600);
		if (fd < 0)
			break;
		write(fd, page, sizeof(page));
		close(fd);
	}
}

static void policy(const char *name)
{
	static const char *names[] = { "default", "preferred", "bind", "interleave", "local", "preferred-many" };
	unsigned long nodes = 3;

	for (long mode = 0; mode < (long)(sizeof(names) / sizeof(names[0])); mode++) {
		if (strcmp(name, names[mode]))
			continue;
		if (syscall(SYS_set_mempolicy, mode, mode && mode != 4 ? &nodes : NULL, mode && mode != 4 ? 64 : 0))
			perror("pagemix: set_mempolicy");
		return;
	}
	usage();
}

int main(int argc, char **argv)
{
	const char *name = NULL, *dir = "/tmp/pagemix-files", *mode;
	long mib = 0, count = 0;
	int opt;

	if (argc < 2)
		usage();
	mode = argv[1];
	optind = 2;
	while ((opt = getopt(argc, argv, "n:p:m:d:c:")) != -1) {
		switch (opt) {
		case 'n': name = optarg; break;
		case 'p': policy(optarg); break;
		case 'm': mib = atol(optarg); break;
		case 'd': dir = optarg; break;
		case 'c': count = atol(optarg); break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	if (name)
		prctl(PR_SET_NAME, name);
	if (!strcmp(mode, "paths"))
		paths(name ? name : "pagemix");
	else if (!strcmp(mode, "anon") && mib > 0)
		anon(mib);
	else if (!strcmp(mode, "pipes") && mib > 0)
		pipes(mib);
	else if (!strcmp(mode, "socks") && mib > 0)
		socks(mib);
	else if (!strcmp(mode, "files") && count > 0)
		files(dir, count);
	else
		usage();
	hold();
	return 0;
}
