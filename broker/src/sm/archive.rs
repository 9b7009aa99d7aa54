//! The snapshot archive: one file holding a RocksDB checkpoint and the snapshot's meta.
//!
//! ```text
//! header   magic "RMQSNAP\0" | version u32 | meta len u32 | meta (postcard SnapshotMeta)
//!          | file count u32 | CRC32C u32 of everything before it in the header
//! file × n name len u16 | name (UTF-8, a plain file name) | data len u64 | data
//!          | CRC32C u32 of name len, name, data len and data
//! ```
//!
//! Integers are big-endian. The archive ends right after the last file; trailing bytes,
//! a short read, a bad checksum, an unsafe name or a duplicate name make it invalid.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::io::BufWriter;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::path::Path;

use openraft::type_config::alias::SnapshotMetaOf;

use super::error::SmError;
use super::error::SmResult;
use super::fsutil;
use crate::raft::types::TypeConfig;

pub type SnapshotMeta = SnapshotMetaOf<TypeConfig>;

const MAGIC: &[u8; 8] = b"RMQSNAP\0";
const VERSION: u32 = 1;
const MAX_META_LEN: u32 = 64 << 20;
const MAX_NAME_LEN: usize = 255;
const MAX_FILES: u32 = 1 << 20;
const CHUNK: usize = 1 << 20;

fn bad(detail: impl std::fmt::Display) -> SmError {
    SmError::bad_snapshot(detail)
}

/// Packs every regular file of `src` (a flat checkpoint directory) into a new archive at
/// `out`, fsynced.
pub fn write_archive(src: &Path, meta: &SnapshotMeta, out: &Path) -> SmResult<()> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(src).map_err(|e| SmError::io("read dir", src, e))? {
        let entry = entry.map_err(|e| SmError::io("read dir", src, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| bad(format!("non UTF-8 file name {n:?}")))?;
        check_name(&name)?;
        names.push(name);
    }
    names.sort();
    let file = File::create_new(out).map_err(|e| SmError::io("create", out, e))?;
    let mut w = BufWriter::with_capacity(CHUNK, file);
    let io = |e| SmError::io("write", out, e);
    w.write_all(&header(meta, names.len())?).map_err(io)?;
    for name in &names {
        write_file(&mut w, &src.join(name), name).map_err(io)?;
    }
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

fn header(meta: &SnapshotMeta, files: usize) -> SmResult<Vec<u8>> {
    let meta = postcard::to_stdvec(meta).map_err(|e| SmError::encode("snapshot meta", e))?;
    let meta_len = u32::try_from(meta.len()).map_err(|_| SmError::encode("snapshot meta", "too long"))?;
    let files = u32::try_from(files).map_err(|_| SmError::encode("snapshot", "too many files"))?;
    let mut h = Vec::with_capacity(24 + meta.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_be_bytes());
    h.extend_from_slice(&meta_len.to_be_bytes());
    h.extend_from_slice(&meta);
    h.extend_from_slice(&files.to_be_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_be_bytes());
    Ok(h)
}

fn write_file(w: &mut impl Write, path: &Path, name: &str) -> std::io::Result<()> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut head = Vec::with_capacity(2 + name.len() + 8);
    head.extend_from_slice(&(name.len() as u16).to_be_bytes());
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(&len.to_be_bytes());
    w.write_all(&head)?;
    let crc = copy_exact(&mut f, w, len, crc32c::crc32c(&head))?;
    w.write_all(&crc.to_be_bytes())
}

/// Copies exactly `len` bytes, extending `crc` over them; a short source is an error.
fn copy_exact(r: &mut impl Read, w: &mut impl Write, len: u64, mut crc: u32) -> std::io::Result<u32> {
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        r.read_exact(&mut buf[..n])?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(crc)
}

/// A name is safe to create inside the unpack directory: a plain file name.
fn check_name(name: &str) -> SmResult<()> {
    let plain = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0']);
    if plain {
        Ok(())
    } else {
        Err(bad(format!("unsafe file name {name:?}")))
    }
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_bytes(r: &mut impl Read, len: usize) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// Reads and verifies the header; returns the meta and the number of files.
fn read_header(r: &mut impl Read) -> SmResult<(SnapshotMeta, u32)> {
    let short = |e: std::io::Error| bad(format!("header: {e}"));
    let mut h = read_bytes(r, 16).map_err(short)?;
    if &h[..8] != MAGIC {
        return Err(bad("not a raftmq snapshot (bad magic)"));
    }
    let version = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    if version != VERSION {
        return Err(bad(format!(
            "archive version {version}, this build reads {VERSION}"
        )));
    }
    let meta_len = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
    if meta_len > MAX_META_LEN {
        return Err(bad(format!("meta of {meta_len} bytes")));
    }
    // The meta, then the file count.
    h.extend(read_bytes(r, meta_len as usize + 4).map_err(short)?);
    if read_u32(r).map_err(short)? != crc32c::crc32c(&h) {
        return Err(bad("header checksum mismatch"));
    }
    let meta_end = h.len() - 4;
    let meta = postcard::from_bytes(&h[16..meta_end]).map_err(|e| bad(format!("meta: {e}")))?;
    let files = u32::from_be_bytes([h[meta_end], h[meta_end + 1], h[meta_end + 2], h[meta_end + 3]]);
    if files > MAX_FILES {
        return Err(bad(format!("{files} files")));
    }
    Ok((meta, files))
}

/// The meta of the archive in `file` (read from its start; leaves the position after the header).
pub fn read_meta(file: &mut File) -> SmResult<SnapshotMeta> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| bad(format!("seek: {e}")))?;
    let (meta, _) = read_header(&mut BufReader::new(file))?;
    Ok(meta)
}

/// Verifies the archive in `file` and unpacks it into `dest` (created, must not exist); every
/// file and `dest` itself are fsynced. Returns the archive's meta.
pub fn unpack(file: &mut File, dest: &Path) -> SmResult<SnapshotMeta> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| bad(format!("seek: {e}")))?;
    let mut r = BufReader::with_capacity(CHUNK, file);
    let (meta, files) = read_header(&mut r)?;
    std::fs::create_dir(dest).map_err(|e| SmError::io("create dir", dest, e))?;
    let mut seen = HashSet::new();
    for _ in 0..files {
        let name = unpack_file(&mut r, dest)?;
        if !seen.insert(name.clone()) {
            return Err(bad(format!("file {name} appears twice")));
        }
    }
    let mut rest = [0u8; 1];
    match r.read(&mut rest) {
        Ok(0) => {}
        Ok(_) => return Err(bad("trailing bytes after the last file")),
        Err(e) => return Err(bad(format!("read: {e}"))),
    }
    fsutil::fsync_dir(dest)?;
    Ok(meta)
}

fn unpack_file(r: &mut impl Read, dest: &Path) -> SmResult<String> {
    let short = |e: std::io::Error| bad(format!("file entry: {e}"));
    let mut len2 = [0u8; 2];
    r.read_exact(&mut len2).map_err(short)?;
    let name_bytes = read_bytes(r, u16::from_be_bytes(len2) as usize).map_err(short)?;
    let mut len8 = [0u8; 8];
    r.read_exact(&mut len8).map_err(short)?;
    let name = String::from_utf8(name_bytes).map_err(|_| bad("non UTF-8 file name"))?;
    check_name(&name)?;
    let mut crc = crc32c::crc32c(&len2);
    crc = crc32c::crc32c_append(crc, name.as_bytes());
    crc = crc32c::crc32c_append(crc, &len8);
    let path = dest.join(&name);
    let out = File::create_new(&path).map_err(|e| SmError::io("create", &path, e))?;
    let mut w = BufWriter::with_capacity(CHUNK, out);
    let crc =
        copy_exact(r, &mut w, u64::from_be_bytes(len8), crc).map_err(|e| bad(format!("{name}: {e}")))?;
    if read_u32(r).map_err(short)? != crc {
        return Err(bad(format!("checksum mismatch in {name}")));
    }
    let out = w
        .into_inner()
        .map_err(|e| SmError::io("write", &path, e.into_error()))?;
    out.sync_all().map_err(|e| SmError::io("fsync", &path, e))?;
    Ok(name)
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
