/*
 * page_owner_window: a window of /sys/kernel/debug/page_owner, from a pfn on.
 *
 *   page_owner_window FIRST_PFN BYTES [FILE]
 *
 * read_page_owner() takes its file position as the pfn to start from and
 * returns one record per read(); only 6.9+ can lseek() it, but pread() works
 * on every kernel.  So: pread() at FIRST_PFN, then at the printed record's
 * pfn + 1 ("PFN 0x..." on 6.9+, "PFN ..." in decimal before), until BYTES of
 * whole records are out (on standard output, in 1 MiB writes: per-record
 * writes to a 9p share are very slow).  The whole text of a guest that is
 * running out of memory is hundreds of MB; tests/test_vm_kdump.py samples a
 * few windows of it instead.  Built static on the host by scripts/testvm.py
 * (helper()), never committed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *path = argc > 3 ? argv[3] : "/sys/kernel/debug/page_owner";
	static char buf[1 << 16];
	unsigned long long pos;
	long want, out = 0;
	int fd;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: page_owner_window FIRST_PFN BYTES [FILE]\n");
		return 2;
	}
	pos = strtoull(argv[1], NULL, 0);
	want = atol(argv[2]);
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		perror(path);
		return 1;
	}
	setvbuf(stdout, NULL, _IOFBF, 1 << 20);
	while (out < want) {
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, pos);
		char *pfn;

		if (n <= 0) {
			if (n < 0)
				perror("pread");
			return n < 0;
		}
		buf[n] = 0;
		pfn = strstr(buf, "\nPFN ");
		if (!pfn) {
			fprintf(stderr, "page_owner_window: no PFN line in a record\n");
			return 1;
		}
		fwrite(buf, 1, n, stdout);
		out += n;
		pos = strtoull(pfn + 5, NULL, 0) + 1;
	}
	return 0;
}
