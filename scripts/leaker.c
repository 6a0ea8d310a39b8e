/*
 * leaker: pin kernel pages along one allocation path, at a steady rate, until
 * the kernel runs out of memory (with vm.panic_on_oom=1: until it panics).
 *
 * The test guest's out-of-memory scenario (scripts/testvm.py crash --how oom,
 * tests/test_vm_kdump.py) runs it; page_owner must then show its pages under
 * one allocation stack that nothing else in the guest uses, and under its pid
 * and the comm "leaker".  Built static on the host by scripts/testvm.py
 * (helper()), into the kernel cache, never committed.
 *
 *   leaker [-m tmpfs|pipe] [-f FILE] [-r MIB_PER_SECOND] [-s STEP_KIB] [-p HOLD_FILE]
 *
 *   -m tmpfs  (default) grow FILE, on a tmpfs mounted with size=0 (no limit),
 *             by fallocate(): each page comes from shmem_fallocate(), a path
 *             that ordinary writes to tmpfs (shmem_write_begin) do not take.
 *   -m pipe   write into pipes it never reads, each enlarged to 4 MiB (1 MiB
 *             without CAP_SYS_RESOURCE) with F_SETPIPE_SZ: each page comes
 *             from pipe_write().
 *   -r        MiB per second (default 16); -s  KiB per step (default 1024).
 *   -p HOLD   while the file HOLD exists, take no step: the leak stops, and
 *             resumes at its rate when HOLD is removed (the time held is not
 *             made up).  While it holds, HOLD.held exists (created once the
 *             step in progress is done), so a test can read the kernel's
 *             counters knowing the leak stands still (tests/test_vm_history.py).
 *
 * When a step fails (ENOSPC, ENOMEM, too many files) it keeps what it holds,
 * says so once on stderr and tries again a second later.  It never frees.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define PIPE_BYTES (4 << 20)

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(void)
{
	fprintf(stderr, "usage: leaker [-m tmpfs|pipe] [-f FILE] [-r MIB_PER_SECOND] [-s STEP_KIB] [-p HOLD_FILE]\n");
	exit(2);
}

/* A new pipe, enlarged, its write end non-blocking; -1 if none. */
static int new_pipe(void)
{
	int fds[2];

	if (pipe2(fds, O_NONBLOCK) < 0)
		return -1;
	/* Beyond fs.pipe-max-size (1 MiB) only with CAP_SYS_RESOURCE. */
	if (fcntl(fds[1], F_SETPIPE_SZ, PIPE_BYTES) < 0)
		fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
	return fds[1];  /* the read end stays open, never read */
}

/* One step into the pipes: bytes written, or -1 with errno. */
static long pipe_step(int *wfd, const char *buf, long step)
{
	long done = 0;

	while (done < step) {
		ssize_t n = *wfd < 0 ? -1 : write(*wfd, buf + done, step - done);

		if (n > 0) {
			done += n;
		} else if (*wfd < 0 || errno == EAGAIN) {
			*wfd = new_pipe();  /* this one is full */
			if (*wfd < 0)
				break;
		} else {
			break;
		}
	}
	return done ? done : -1;
}

/* While the file hold exists, wait with hold.held present; the seconds held. */
static double hold_while(const char *hold)
{
	char held[4096];
	double t;
	int fd;

	if (!hold || access(hold, F_OK))
		return 0;
	t = now();
	snprintf(held, sizeof(held), "%s.held", hold);
	fd = open(held, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0)
		close(fd);
	while (!access(hold, F_OK))
		usleep(20000);
	unlink(held);
	return now() - t;
}

int main(int argc, char **argv)
{
	const char *mode = "tmpfs", *file = "/leak/leak", *hold = NULL;
	double rate = 16, t0;
	long step = 1024 << 10, total = 0;
	int opt, fd = -1, wfd = -1, failing = 0;
	char *buf;
	struct rlimit nofile;

	while ((opt = getopt(argc, argv, "m:f:r:s:p:")) != -1) {
		switch (opt) {
		case 'm': mode = optarg; break;
		case 'f': file = optarg; break;
		case 'r': rate = atof(optarg); break;
		case 's': step = atol(optarg) << 10; break;
		case 'p': hold = optarg; break;
		default: usage();
		}
	}
	if (optind != argc || rate <= 0 || step <= 0 || (strcmp(mode, "tmpfs") && strcmp(mode, "pipe")))
		usage();
	prctl(PR_SET_NAME, "leaker");
	buf = malloc(step);
	if (!buf)
		return 1;
	memset(buf, 'L', step);
	if (!strcmp(mode, "tmpfs")) {
		fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0) {
			fprintf(stderr, "leaker: %s: %s\n", file, strerror(errno));
			return 2;
		}
	} else if (!getrlimit(RLIMIT_NOFILE, &nofile)) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}
	t0 = now();
	for (;;) {
		long got;

		t0 += hold_while(hold);  /* resume at the rate, not catching up */
		if (fd >= 0)
			got = fallocate(fd, 0, total, step) ? -1 : step;
		else
			got = pipe_step(&wfd, buf, step);
		if (got < 0) {
			if (!failing++)
				fprintf(stderr, "leaker: holding %ld KiB: %s\n", total >> 10, strerror(errno));
			sleep(1);
			continue;
		}
		failing = 0;
		total += got;
		double due = t0 + total / (rate * (1 << 20)) - now();

		if (due > 0)
			usleep(due * 1e6);
	}
}
