#!/usr/bin/env python3
"""What does one group-commit round cost the kernel, written three ways?

Each round appends a random MIN_KB-MAX_KB (default 200-360 KB: what a commit-log round
carried at about 55,000 1 KiB messages/s, 214 rounds a second) and fdatasyncs it, into a
1 GiB file that is
  "fallocated"  preallocated with posix_fallocate, written through the page cache
                (what the commit log does),
  "direct"      the same file written with O_DIRECT: every round rewrites the partial
                block it starts in and is rounded up to whole 4 KiB blocks (the bytes
                differ from a real log's; the amount written is the same),
  "zeroed"      written out with zeroes and synced beforehand, then written through the
                page cache (no unwritten extents left to convert).

Usage: scripts/round_write_probe.py [DIR] [MIB_PER_RUN] [MIN_KB] [MAX_KB]
(default: ./target/round-probe, 200, 200, 360)
Prints, for each mode and round (alternating, three rounds): rounds/s, the process's CPU
per round, and the whole machine's busy CPU per round (journal and writeback threads
included), from /proc/stat. See docs/BENCHMARKS.md ("Where a round's kernel time goes").
"""
import mmap
import os
import random
import resource
import sys
import time

FILE_SIZE = 1 << 30
BLOCK = 4096


def busy_ticks():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle


def prepare(path, mode):
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    if mode in ("zeroed", "direct-zeroed"):
        zeros = b"\0" * (1 << 20)
        for _ in range(FILE_SIZE >> 20):
            os.write(fd, zeros)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    else:
        os.posix_fallocate(fd, 0, FILE_SIZE)
    return fd


def run(path, mode, total, lo, hi):
    fd = prepare(path, mode)
    direct = mode.startswith("direct")
    wfd = os.open(path, os.O_WRONLY | os.O_DIRECT) if direct else fd
    rng = random.Random(1)
    # mmap memory is page aligned, as O_DIRECT needs.
    data = mmap.mmap(-1, hi + 2 * BLOCK)
    data.write(os.urandom(hi + 2 * BLOCK))
    end = written = rounds = 0
    hz = os.sysconf("SC_CLK_TCK")
    r0, b0, t0 = resource.getrusage(resource.RUSAGE_SELF), busy_ticks(), time.time()
    while written < total:
        n = rng.randint(lo, hi)
        if direct:
            start = end - end % BLOCK
            stop = -(-(end + n) // BLOCK) * BLOCK
            os.pwritev(wfd, [memoryview(data)[: stop - start]], start)
        else:
            os.pwrite(fd, memoryview(data)[:n], end)
        os.fdatasync(wfd)
        end += n
        written += n
        rounds += 1
    r1, b1, t1 = resource.getrusage(resource.RUSAGE_SELF), busy_ticks(), time.time()
    if wfd != fd:
        os.close(wfd)
    os.close(fd)
    os.unlink(path)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    machine = (b1 - b0) / hz
    print(
        f"{mode:13} {rounds / (t1 - t0):6.0f} rounds/s  process {cpu / rounds * 1e6:5.0f} us/round"
        f" {cpu / (total >> 20) * 1e3:5.2f} ms/MiB  machine {machine / rounds * 1e6:5.0f} us/round"
        f" {machine / (total >> 20) * 1e3:5.2f} ms/MiB",
        flush=True,
    )


MODES = ("fallocated", "direct", "zeroed", "direct-zeroed")


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "target/round-probe"
    total = (int(sys.argv[2]) if len(sys.argv) > 2 else 200) << 20
    lo = (int(sys.argv[3]) if len(sys.argv) > 3 else 200) * 1000
    hi = (int(sys.argv[4]) if len(sys.argv) > 4 else 360) * 1000
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "probe.bin")
    for _ in range(3):
        for mode in MODES:
            run(path, mode, total, lo, hi)


if __name__ == "__main__":
    main()
