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
//! The run's own buffer holds that image (see `staging.rs`): [`DirectWriter::prepare`]
//! fills its head and padding while the flusher's queue is locked, in write order, and
//! [`DirectWriter::write`] hands it to the device without copying it.
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

use crate::staging::BLOCK;
use crate::staging::Run;
use crate::staging::head_len;

/// Files with an open direct handle kept at once: the active segment, and the one before
/// it for a write that crosses a roll-over.
const MAX_FILES: usize = 2;

/// A file being written.
struct Target {
    /// The segment's (buffered) handle; identifies it and keeps the pointer unique.
    file: Arc<File>,
    /// `None`: direct I/O is off or the filesystem refused it; write through the page cache.
    direct: Option<Direct>,
}

/// A file's `O_DIRECT` handle and the partial block its last prepared run ends in.
struct Direct {
    handle: File,
    /// File offset of the block holding the end of the last prepared run.
    tail_start: u64,
    /// The bytes of that block before the end of the last prepared run.
    tail: Vec<u8>,
}

/// The write thread's direct writer: its handles and partial blocks.
pub(crate) struct DirectWriter {
    enabled: bool,
    targets: Vec<Target>,
}

impl DirectWriter {
    /// `enabled` false: every write goes through the page cache.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            targets: Vec::new(),
        }
    }

    /// Whether writes to `file` bypass the page cache (as far as is known yet).
    pub fn is_direct(&self, file: &Arc<File>) -> bool {
        self.targets
            .iter()
            .any(|t| Arc::ptr_eq(&t.file, file) && t.direct.is_some())
    }

    /// Frames `run` for a direct write if its file takes them: fills the bytes before it
    /// in its first block and pads it to whole blocks. Call for runs in write order, each
    /// once, before any of them is written (the partial block a run ends in is taken to
    /// be in the file from then on).
    pub fn prepare(&mut self, run: &mut Run) -> io::Result<()> {
        let i = self.target(&run.file);
        let Some(direct) = &mut self.targets[i].direct else {
            return Ok(());
        };
        let file = run.file.clone();
        let offset = run.offset;
        let h = head_len(offset);
        let total = h + (run.end() - offset) as usize;
        let image = run.frame(|head| direct.fill_head(&file, offset, head))?;
        let full = total / BLOCK * BLOCK;
        direct.tail_start = offset - h as u64 + full as u64;
        direct.tail.clear();
        direct.tail.extend_from_slice(&image[full..total]);
        Ok(())
    }

    /// Writes `run`: its image directly if [`DirectWriter::prepare`] framed it, else its
    /// bytes through the page cache.
    pub fn write(&mut self, run: &Run) -> io::Result<()> {
        let i = self.target(&run.file);
        let t = &mut self.targets[i];
        let (Some(direct), Some((at, image))) = (&t.direct, run.image()) else {
            return run.file.write_all_at(run.bytes(), run.offset);
        };
        match direct.handle.write_all_at(image, at) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(error = %e, "direct write refused; writing this segment through the page cache");
                t.direct = None;
                run.file.write_all_at(run.bytes(), run.offset)
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
    /// The bytes before `offset` in its block: the last run's tail if this run continues
    /// it, else read back from `file` (first write, or after a cut; the writer writes in
    /// order, one run at a time, so the file holds them).
    fn fill_head(&self, file: &File, offset: u64, head: &mut [u8]) -> io::Result<()> {
        if head.is_empty() {
            return Ok(());
        }
        let start = offset - head.len() as u64;
        if self.tail_start == start && self.tail_start + self.tail.len() as u64 == offset {
            head.copy_from_slice(&self.tail);
            Ok(())
        } else {
            file.read_exact_at(head, start)
        }
    }
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

    fn fresh(dir: &tempfile::TempDir, name: &str, len: u64) -> Arc<File> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join(name))
            .expect("create");
        f.set_len(len).expect("set_len");
        Arc::new(f)
    }

    fn contents(f: &File, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, 0).expect("read");
        b
    }

    fn run(f: &Arc<File>, at: usize, data: &[u8]) -> Run {
        Run::copied(f, std::path::Path::new("seg"), at as u64, data, Vec::new())
    }

    fn put(w: &mut DirectWriter, f: &Arc<File>, at: usize, data: &[u8]) {
        let mut r = run(f, at, data);
        w.prepare(&mut r).expect("prepare");
        w.write(&r).expect("write");
    }

    /// Unaligned runs, written one after another, a rewrite after a "cut", and a second
    /// writer (as after a restart) that has to read its partial block back: the file
    /// always equals the model, with zeroes past its end.
    #[test]
    fn unaligned_runs_land_where_a_buffered_write_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        let len = 64 * 1024;
        let f = fresh(&dir, "seg", len as u64);
        let mut model = vec![0u8; len];
        let mut w = DirectWriter::new(true);
        let mut at = 64usize;
        f.write_all_at(&[7u8; 64], 0).expect("header");
        model[..64].fill(7);
        for (n, size) in [1usize, 100, 4032, 4096, 5000, 3, 9000].into_iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 + n) as u8).collect();
            put(&mut w, &f, at, &data);
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
            put(writer, &f, at2, &data);
            model[at2..at2 + size].copy_from_slice(&data);
            assert_eq!(contents(&f, len), model, "after cut, run {n}");
        }
    }

    /// A round as the write thread does it: every run prepared first (the queue locked),
    /// then all written; the second run on a file continues the first's partial block
    /// before that block is in the file, and a roll-over puts a run on a second file.
    #[test]
    fn runs_prepared_together_then_written_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let len = 32 * 1024;
        let (a, b) = (fresh(&dir, "a", len as u64), fresh(&dir, "b", len as u64));
        let mut w = DirectWriter::new(true);
        put(&mut w, &a, 64, &[1u8; 100]);
        let mut runs = vec![
            run(&a, 164, &[2u8; 5000]),
            run(&a, 5164, &[3u8; 10]),
            run(&b, 64, &[4u8; 4100]),
        ];
        for r in &mut runs {
            w.prepare(r).expect("prepare");
        }
        for r in &runs {
            w.write(r).expect("write");
        }
        let mut ma = vec![0u8; len];
        ma[64..164].fill(1);
        ma[164..5164].fill(2);
        ma[5164..5174].fill(3);
        let mut mb = vec![0u8; len];
        mb[64..4164].fill(4);
        assert_eq!(contents(&a, len), ma);
        assert_eq!(contents(&b, len), mb);
    }

    /// How a test run's buffer is made: copied, encoded in place, or encoded in place and
    /// then grown past its capacity (the buffer moves and loses its alignment).
    fn make_run(f: &Arc<File>, at: usize, data: &[u8], how: u8) -> Run {
        let path = std::path::Path::new("seg");
        if how == 0 {
            return run(f, at, data);
        }
        let mut buf = Vec::new();
        let reserve = if how == 1 { data.len() } else { 0 };
        let start = crate::staging::lay_out(&mut buf, at as u64, reserve);
        buf.extend_from_slice(data);
        Run::take(f, path, at as u64, buf, start)
            .unwrap_or_else(|buf| Run::copied(f, path, at as u64, &buf[start..], Vec::new()))
    }

    proptest::proptest! {
        /// Rounds of runs as the write thread sees them (each run continuing the last,
        /// some extended after they were made, all of a round prepared before any is
        /// written), with cuts back into the written data between rounds: the file
        /// always equals the model.
        #[test]
        fn rounds_of_runs_match_a_model(
            rounds in proptest::collection::vec(
                (proptest::collection::vec((1usize..9000, 0u8..3, proptest::option::of(1usize..3000)), 1..4), 0usize..3000),
                1..8,
            ),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let len = 320 * 1024;
            let f = fresh(&dir, "seg", len as u64);
            let mut model = vec![0u8; len];
            let mut w = DirectWriter::new(true);
            let mut at = 64usize;
            let mut fill = 1u8;
            for (runs, cut) in rounds {
                let mut staged = Vec::new();
                for (size, how, more) in runs {
                    let data = vec![fill; size];
                    fill = fill.wrapping_add(1).max(1);
                    let mut r = make_run(&f, at, &data, how);
                    model[at..at + size].copy_from_slice(&data);
                    at += size;
                    if let Some(m) = more {
                        let extra = vec![fill; m];
                        r.extend(&extra);
                        model[at..at + m].copy_from_slice(&extra);
                        at += m;
                    }
                    staged.push(r);
                }
                for r in &mut staged {
                    w.prepare(r).expect("prepare");
                }
                for r in &staged {
                    w.write(r).expect("write");
                }
                proptest::prop_assert_eq!(contents(&f, len), model.clone());
                // A cut, as `truncate_after` makes it: zeroes from the cut on.
                let cut = at.saturating_sub(cut).max(64);
                model[cut..].fill(0);
                f.write_all_at(&vec![0u8; len - cut], cut as u64).expect("cut");
                at = cut;
            }
        }
    }

    #[test]
    fn disabled_writer_writes_through_the_page_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = fresh(&dir, "seg", 8192);
        let mut w = DirectWriter::new(false);
        put(&mut w, &f, 10, b"abc");
        assert!(!w.is_direct(&f));
        assert_eq!(&contents(&f, 13)[10..], b"abc");
    }
}
