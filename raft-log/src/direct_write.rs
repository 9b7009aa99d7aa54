//! Segment writes that bypass the page cache (`O_DIRECT`).
//!
//! A buffered `pwrite` copies every byte into freshly allocated page-cache pages, and the
//! `fdatasync` after it writes those pages back: on the benchmark machine that copy alone
//! was a tenth of all CPU time under load, for pages nobody reads again (readers are
//! served from the log's read cache). A direct write hands the buffer to the device
//! instead; the `fdatasync` that follows still makes it durable (it flushes the device's
//! cache and commits the extent conversion of preallocated space).
//!
//! Direct I/O wants offsets, lengths and buffer addresses aligned to the device's block.
//! A run of records starts anywhere, so a write covers whole [`BLOCK`]s: it starts with
//! the bytes already in the file before the run inside its first block (kept from the
//! previous write to that file, or read back) and ends in zeroes up to the next block
//! boundary. Those zeroes lie past the end of the log, where the file reads as zeroes
//! anyway (preallocated space, or the zeroes a cut leaves), and the next write rewrites
//! the partial block with the same leading bytes. A torn write of that block therefore
//! leaves the bytes before the run as they were.
//!
//! Where the filesystem refuses `O_DIRECT` (some overlays, older kernels' tmpfs; kernel
//! 6.18's tmpfs takes it), at open or at the first write, that file is written through
//! the page cache as before.

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

/// Alignment of direct writes: offsets, lengths and the buffer's address. 4 KiB is a
/// multiple of every logical block size in use (512 and 4096).
pub(crate) const BLOCK: usize = 4096;

/// Files with an open direct handle kept at once: the active segment, and the one before
/// it for a write that crosses a roll-over.
const MAX_FILES: usize = 2;

/// Largest bounce buffer kept between writes (as for the staging buffers): a larger one,
/// grown for an unusually large run, is given back after it.
const MAX_KEPT_BLOCKS: usize = (16 << 20) / BLOCK;

/// One 4 KiB-aligned block of a bounce buffer.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// A file being written.
struct Target {
    /// The segment's (buffered) handle; identifies it and keeps the pointer unique.
    file: Arc<File>,
    /// `None`: direct I/O is off or the filesystem refused it; write through the page cache.
    direct: Option<Direct>,
}

/// A file's `O_DIRECT` handle and the partial block its last write ended in.
struct Direct {
    handle: File,
    /// File offset of the block holding the end of the last write.
    tail_start: u64,
    /// The bytes of that block before the end of the last write.
    tail: Vec<u8>,
}

/// The write thread's direct writer: its handles, partial blocks and bounce buffer.
pub(crate) struct DirectWriter {
    enabled: bool,
    targets: Vec<Target>,
    bounce: Vec<Block>,
}

impl DirectWriter {
    /// `enabled` false: every write goes through the page cache.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            targets: Vec::new(),
            bounce: Vec::new(),
        }
    }

    /// Whether writes to `file` bypass the page cache (as far as is known yet).
    pub fn is_direct(&self, file: &Arc<File>) -> bool {
        self.targets
            .iter()
            .any(|t| Arc::ptr_eq(&t.file, file) && t.direct.is_some())
    }

    /// Writes `data` at `offset` of `file`: directly if the file allows it, else through
    /// the page cache.
    pub fn write(&mut self, file: &Arc<File>, offset: u64, data: &[u8]) -> io::Result<()> {
        let i = self.target(file);
        let t = &mut self.targets[i];
        let Some(direct) = &mut t.direct else {
            return file.write_all_at(data, offset);
        };
        match direct.write(file, &mut self.bounce, offset, data) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(error = %e, "direct write refused; writing this segment through the page cache");
                t.direct = None;
                file.write_all_at(data, offset)
            }
            other => other,
        }
    }

    /// Index of `file`'s target, opening its direct handle on first use.
    fn target(&mut self, file: &Arc<File>) -> usize {
        if let Some(i) = self.targets.iter().position(|t| Arc::ptr_eq(&t.file, file)) {
            return i;
        }
        if self.targets.len() == MAX_FILES {
            self.targets.remove(0);
        }
        let direct = if self.enabled { reopen_direct(file) } else { None };
        self.targets.push(Target {
            file: file.clone(),
            direct,
        });
        self.targets.len() - 1
    }
}

impl Direct {
    /// Writes `data` at `offset` as whole blocks through `bounce`; `file` (the buffered
    /// handle) gives back the block's leading bytes when they are not the last write's.
    fn write(&mut self, file: &File, bounce: &mut Vec<Block>, offset: u64, data: &[u8]) -> io::Result<()> {
        let start = align_down(offset);
        let head = (offset - start) as usize;
        let total = head + data.len();
        let padded = total.div_ceil(BLOCK) * BLOCK;
        let blocks = padded / BLOCK;
        if bounce.len() < blocks {
            bounce.resize(blocks, Block([0; BLOCK]));
        }
        let buf = as_bytes_mut(&mut bounce[..blocks]);
        if head > 0 {
            if self.tail_start == start && self.tail_start + self.tail.len() as u64 == offset {
                buf[..head].copy_from_slice(&self.tail);
            } else {
                // Not the continuation of our last write (first write, or after a cut):
                // the file holds these bytes (the writer writes in order, one at a time).
                file.read_exact_at(&mut buf[..head], start)?;
            }
        }
        buf[head..total].copy_from_slice(data);
        buf[total..padded].fill(0);
        self.handle.write_all_at(&buf[..padded], start)?;
        let full = align_down(total as u64) as usize;
        self.tail_start = start + full as u64;
        self.tail.clear();
        self.tail.extend_from_slice(&buf[full..total]);
        if bounce.len() > MAX_KEPT_BLOCKS {
            *bounce = Vec::new();
        }
        Ok(())
    }
}

fn align_down(x: u64) -> u64 {
    x & !(BLOCK as u64 - 1)
}

#[allow(unsafe_code)]
fn as_bytes_mut(blocks: &mut [Block]) -> &mut [u8] {
    // SAFETY: `Block` is `repr(C)` around a byte array with no padding (its size equals
    // its alignment), so the blocks are `len * BLOCK` contiguous, initialized bytes, and
    // the returned slice borrows them mutably for as long as `blocks` is borrowed.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), blocks.len() * BLOCK) }
}

/// A second, write-only handle to the same open file with `O_DIRECT`; None where the
/// filesystem refuses it.
fn reopen_direct(file: &File) -> Option<Direct> {
    let opened = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()));
    match opened {
        Ok(handle) => Some(Direct {
            handle,
            tail_start: 0,
            tail: Vec::new(),
        }),
        Err(e) => {
            tracing::debug!(error = %e, "no direct I/O for a segment; using the page cache");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(dir: &tempfile::TempDir, len: u64) -> Arc<File> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("seg"))
            .expect("create");
        f.set_len(len).expect("set_len");
        Arc::new(f)
    }

    fn contents(f: &File, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, 0).expect("read");
        b
    }

    /// Unaligned runs, written one after another, a rewrite after a "cut", and a second
    /// writer (as after a restart) that has to read its partial block back: the file
    /// always equals the model, with zeroes past its end.
    #[test]
    fn unaligned_runs_land_where_a_buffered_write_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        let len = 64 * 1024;
        let f = fresh(&dir, len as u64);
        let mut model = vec![0u8; len];
        let mut w = DirectWriter::new(true);
        let mut at = 64usize;
        f.write_all_at(&[7u8; 64], 0).expect("header");
        model[..64].fill(7);
        for (n, size) in [1usize, 100, 4032, 4096, 5000, 3, 9000].into_iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 + n) as u8).collect();
            w.write(&f, at as u64, &data).expect("write");
            if n == 0 && reopen_direct(&f).is_some() {
                assert!(
                    w.is_direct(&f),
                    "this filesystem takes O_DIRECT: the writer must use it"
                );
            }
            model[at..at + size].copy_from_slice(&data);
            at += size;
            assert_eq!(contents(&f, len), model, "after run {n}");
        }
        // A cut back into the middle of a block, then appends from there.
        let cut = at - 2500;
        model[cut..].fill(0);
        f.write_all_at(&vec![0u8; len - cut], cut as u64).expect("cut");
        let mut w2 = DirectWriter::new(true);
        for (n, size) in [10usize, 7000].into_iter().enumerate() {
            let data = vec![0xA0 + n as u8; size];
            let at2 = if n == 0 { cut } else { cut + 10 };
            let writer = if n == 0 { &mut w } else { &mut w2 };
            writer.write(&f, at2 as u64, &data).expect("write after cut");
            model[at2..at2 + size].copy_from_slice(&data);
            assert_eq!(contents(&f, len), model, "after cut, run {n}");
        }
    }

    #[test]
    fn a_bounce_buffer_grown_for_a_huge_run_is_given_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = fresh(&dir, 20 << 20);
        let mut w = DirectWriter::new(true);
        let data: Vec<u8> = (0..(17usize << 20)).map(|i| (i % 251) as u8).collect();
        w.write(&f, 100, &data).expect("write");
        assert!(w.bounce.len() <= MAX_KEPT_BLOCKS);
        let mut back = vec![0u8; data.len()];
        f.read_exact_at(&mut back, 100).expect("read");
        assert!(back == data, "the huge run reads back");
        w.write(&f, 100 + data.len() as u64, b"next")
            .expect("write after it");
        let mut next = [0u8; 4];
        f.read_exact_at(&mut next, 100 + data.len() as u64).expect("read");
        assert_eq!(&next, b"next");
    }

    #[test]
    fn disabled_writer_writes_through_the_page_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = fresh(&dir, 8192);
        let mut w = DirectWriter::new(false);
        w.write(&f, 10, b"abc").expect("write");
        assert!(!w.is_direct(&f));
        assert_eq!(&contents(&f, 13)[10..], b"abc");
    }
}
