//! A staged run: bytes bound for one file at one offset, kept in a buffer laid out so
//! that a direct write (see `direct_write.rs`) can hand that very buffer to the device.
//!
//! Direct I/O wants the buffer's address, the file offset and the length aligned to
//! [`BLOCK`]. A run starts anywhere in a block, so its buffer holds, in this order:
//!
//! ```text
//! [lead: up to the buffer's first block boundary][head room][the run's bytes][padding]
//!                                                 ^ start                ^ start + len
//! ```
//!
//! The head room is as long as the run's offset within its block: the write thread fills
//! it with the bytes the file already holds there, and pads the end with zeroes up to the
//! next block boundary ([`Run::frame`]), so `[start - head, start + len + padding)` is a
//! whole-block image of the file from `offset - head` on. The appender encodes its
//! records straight into such a buffer ([`lay_out`]), and the flusher takes it over
//! as it is when it starts a new run; only an append that joins a run already staged is
//! copied. A buffer that lost its alignment (a `Vec` that grew moves) is laid out anew
//! with one copy when it is framed.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

/// Alignment of direct writes: offsets, lengths and the buffer's address. 4 KiB is a
/// multiple of every logical block size in use (512 and 4096).
pub(crate) const BLOCK: usize = 4096;

/// Where `offset` falls inside its block.
pub(crate) fn head_len(offset: u64) -> usize {
    (offset % BLOCK as u64) as usize
}

/// Clears `buf` and lays it out for a run at file `offset` whose bytes are about to be
/// appended to it: returns the index where they begin. Room is reserved for `capacity`
/// bytes of the run and its padding.
pub(crate) fn lay_out(buf: &mut Vec<u8>, offset: u64, capacity: usize) -> usize {
    buf.clear();
    // Lead, head and padding: each less than a block.
    buf.reserve(3 * BLOCK + capacity);
    let lead = buf.as_ptr().align_offset(BLOCK);
    let start = lead + head_len(offset);
    buf.resize(start, 0);
    start
}

/// Whether a run at `offset` whose bytes begin at `buf[start]` has room for its head
/// before them, starting on a block boundary.
fn image_aligned(buf: &[u8], start: usize, offset: u64) -> bool {
    let head = head_len(offset);
    start >= head && (buf.as_ptr() as usize + start - head).is_multiple_of(BLOCK)
}

/// Bytes destined for `file` at `offset`, not yet (known to be) written there.
#[derive(Debug)]
pub(crate) struct Run {
    pub file: Arc<File>,
    pub path: PathBuf,
    pub offset: u64,
    buf: Vec<u8>,
    start: usize,
    len: usize,
    /// Set by [`Run::frame`]: the buffer holds the run's whole-block image.
    framed: bool,
}

impl Run {
    /// A run holding a copy of `bytes`, in `spare` (any buffer; its contents are dropped).
    pub fn copied(
        file: &Arc<File>,
        path: &std::path::Path,
        offset: u64,
        bytes: &[u8],
        spare: Vec<u8>,
    ) -> Self {
        let mut buf = spare;
        let start = lay_out(&mut buf, offset, bytes.len());
        buf.extend_from_slice(bytes);
        Self {
            file: file.clone(),
            path: path.to_path_buf(),
            offset,
            buf,
            start,
            len: bytes.len(),
            framed: false,
        }
    }

    /// A run made of `buf[start..]` as it is, which [`lay_out`] prepared for `offset`; the
    /// buffer back if it no longer has that layout (it grew and moved, or was laid out for
    /// another offset).
    pub fn take(
        file: &Arc<File>,
        path: &std::path::Path,
        offset: u64,
        buf: Vec<u8>,
        start: usize,
    ) -> Result<Self, Vec<u8>> {
        if !image_aligned(&buf, start, offset) {
            return Err(buf);
        }
        Ok(Self {
            file: file.clone(),
            path: path.to_path_buf(),
            offset,
            len: buf.len() - start,
            buf,
            start,
            framed: false,
        })
    }

    /// The run's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// File offset just past the run.
    pub fn end(&self) -> u64 {
        self.offset + self.len as u64
    }

    /// Appends `bytes` (the records right after the run's end). Not after [`Run::frame`].
    pub fn extend(&mut self, bytes: &[u8]) {
        debug_assert!(!self.framed, "extend after frame");
        self.buf.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Makes the buffer a whole-block image of the file from the run's block on: lays it
    /// out anew if it lost its alignment or has no room for the padding, then lets `head`
    /// fill the bytes before `offset` in the first block and pads the end with zeroes.
    /// Returns the image; the run's bytes stay where [`Run::bytes`] finds them.
    pub fn frame<E>(&mut self, head: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<&[u8], E> {
        let h = head_len(self.offset);
        let padded = (h + self.len).div_ceil(BLOCK) * BLOCK;
        if !image_aligned(&self.buf, self.start, self.offset) || self.start - h + padded > self.buf.capacity()
        {
            let mut fresh = Vec::new();
            let start = lay_out(&mut fresh, self.offset, padded);
            fresh.extend_from_slice(self.bytes());
            self.buf = fresh;
            self.start = start;
        }
        let first = self.start - h;
        // Within capacity: the buffer does not move.
        self.buf.resize(first + padded, 0);
        if let Err(e) = head(&mut self.buf[first..self.start]) {
            self.buf.truncate(self.start + self.len);
            return Err(e);
        }
        self.framed = true;
        Ok(&self.buf[first..first + padded])
    }

    /// The whole-block image and its file offset, once [`Run::frame`] made it.
    pub fn image(&self) -> Option<(u64, &[u8])> {
        let h = head_len(self.offset);
        self.framed
            .then(|| (self.offset - h as u64, &self.buf[self.start - h..]))
    }

    /// The buffer, for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> (tempfile::TempDir, Arc<File>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = File::create(dir.path().join("f")).expect("create");
        (dir, Arc::new(f))
    }

    fn check_image(run: &mut Run, head_byte: u8) {
        let (offset, bytes) = (run.offset, run.bytes().to_vec());
        let h = head_len(offset);
        let image = run
            .frame(|head| {
                head.fill(head_byte);
                Ok::<(), ()>(())
            })
            .expect("frame")
            .to_vec();
        let addr = run.buf.as_ptr() as usize + run.start - h;
        assert_eq!(addr % BLOCK, 0, "image starts on a block boundary");
        assert_eq!(image.len() % BLOCK, 0, "image is whole blocks");
        assert!(image[..h].iter().all(|&b| b == head_byte), "head filled");
        assert_eq!(&image[h..h + bytes.len()], &bytes[..], "run bytes in place");
        assert!(image[h + bytes.len()..].iter().all(|&b| b == 0), "zero padding");
        assert_eq!(run.bytes(), &bytes[..], "bytes() unchanged by framing");
    }

    #[test]
    fn an_encoded_buffer_is_taken_as_it_is_and_framed_in_place() {
        let (_d, f) = file();
        for offset in [0u64, 1, 64, 4095, 4096, 10_000] {
            let mut buf = Vec::new();
            let start = lay_out(&mut buf, offset, 5000);
            buf.extend((0..5000u32).map(|i| i as u8));
            let ptr = buf.as_ptr();
            let mut run = Run::take(&f, std::path::Path::new("f"), offset, buf, start).expect("aligned");
            check_image(&mut run, 0xEE);
            assert_eq!(run.buf.as_ptr(), ptr, "framed without moving (offset {offset})");
        }
    }

    #[test]
    fn a_buffer_laid_out_for_another_offset_is_refused() {
        let (_d, f) = file();
        let mut buf = Vec::new();
        let start = lay_out(&mut buf, 64, 10);
        buf.push(1);
        let back = Run::take(&f, std::path::Path::new("f"), 128, buf, start);
        assert!(back.is_err(), "head room for 64 does not fit a run at 128");
    }

    #[test]
    fn copied_and_extended_runs_frame_even_after_the_buffer_moved() {
        let (_d, f) = file();
        let mut run = Run::copied(&f, std::path::Path::new("f"), 100, b"abc", Vec::new());
        // Grow far past the reserved capacity: the Vec reallocates, losing its alignment
        // (or keeping it by chance); framing must cope either way.
        for i in 0..50u8 {
            run.extend(&vec![i; 997]);
        }
        check_image(&mut run, 7);
        assert_eq!(run.end(), 100 + 3 + 50 * 997);
    }

    #[test]
    fn a_run_without_room_for_its_padding_is_laid_out_anew() {
        let (_d, f) = file();
        let mut buf = Vec::new();
        let start = lay_out(&mut buf, 0, 0);
        let room = buf.capacity() - buf.len();
        buf.extend(std::iter::repeat_n(9u8, room - 1));
        let mut run = Run::take(&f, std::path::Path::new("f"), 0, buf, start).expect("aligned");
        check_image(&mut run, 0);
    }
}
