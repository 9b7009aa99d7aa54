#!/usr/bin/env python3
"""What does growing the page cache cost against recycling it? Writes SIZE MiB into a new
file in 1 MiB pwrites, each fdatasync'd, (a) "plain", leaving every page cached, and
(b) "drop", dropping the pages more than 64 MiB behind the end as it goes
(posix_fadvise DONTNEED, as the commit log does beyond its page_cache_window).

Usage: scripts/page_cache_probe.py [DIR] [SIZE_MIB]   (default: ./target/page-cache-probe, 2048)
Prints wall and system CPU seconds for each, alternating, two rounds. See
docs/BENCHMARKS.md ("A bounded page cache").
"""
import os
import resource
import sys
import time

CHUNK = 1 << 20
BEHIND = 64 << 20


def run(path, mode, total):
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC)
    try:
        os.posix_fallocate(fd, 0, total)
        buf = b"x" * CHUNK
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.time()
        off = 0
        while off < total:
            os.pwrite(fd, buf, off)
            off += CHUNK
            os.fdatasync(fd)
            if mode == "drop" and off > BEHIND and off % (8 * CHUNK) == 0:
                os.posix_fadvise(fd, 0, off - BEHIND, os.POSIX_FADV_DONTNEED)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        print(f"{mode:5} wall {time.time() - t0:6.2f} s  sys {r1.ru_stime - r0.ru_stime:6.2f} s")
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "target/page-cache-probe"
    total = (int(sys.argv[2]) if len(sys.argv) > 2 else 2048) * CHUNK
    os.makedirs(d, exist_ok=True)
    for _ in range(2):
        for mode in ("plain", "drop"):
            run(os.path.join(d, f"probe-{mode}"), mode, total)


if __name__ == "__main__":
    main()
