#!/usr/bin/env python3
"""How fast is "write 512 KiB, fdatasync" into a file whose blocks are (a) reserved with
fallocate, (b) already written (zero-filled), (c) not there yet (the file grows)?

Usage: scripts/fsync_probe.py [DIR]   (default: ./target/fsync-probe, on the data disk)
Prints MB/s and ms per write+fdatasync for each kind, three rounds, so that the disk's
swings show. See docs/BENCHMARKS.md.
"""
import os
import sys
import time

CHUNK = 512 * 1024
COUNT = 400


def measure(path, prepare):
    if os.path.exists(path):
        os.remove(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        prepare(fd)
        buf = os.urandom(CHUNK)
        start = time.time()
        for i in range(COUNT):
            os.pwrite(fd, buf, i * CHUNK)
            os.fdatasync(fd)
        return time.time() - start
    finally:
        os.close(fd)
        os.remove(path)


def reserve(fd):
    os.posix_fallocate(fd, 0, COUNT * CHUNK)
    os.fsync(fd)


def zero_fill(fd):
    zeros = bytes(8 << 20)
    for off in range(0, COUNT * CHUNK, len(zeros)):
        os.pwrite(fd, zeros, off)
    os.fsync(fd)


def grow(_fd):
    pass


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "fsync-probe")
    os.makedirs(root, exist_ok=True)
    for _ in range(3):
        for name, prepare in (("fallocate", reserve), ("zero-filled", zero_fill), ("growing", grow)):
            secs = measure(os.path.join(root, name), prepare)
            print(f"{name:12s} {COUNT * CHUNK / secs / 1e6:8.1f} MB/s  {secs / COUNT * 1e3:.3f} ms per write+fdatasync")


if __name__ == "__main__":
    main()
