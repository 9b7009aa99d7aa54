//! The two threads behind [`crate::flusher::Flusher`]: one writes staged runs (directly
//! to the device where the filesystem allows, see `direct_write.rs`, else into the page
//! cache), the other fsyncs what was written and completes the callbacks.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::direct_write::DirectWriter;
use crate::error::LogError;
use crate::flusher::Shared;
use crate::flusher::Written;
use crate::flusher::WrittenFile;
use crate::flusher::lock;
use crate::fsutil;
use crate::page_cache::FileRef;
use crate::page_cache::Trim;
use crate::staging::Run;
use crate::synced;

/// Staging buffers kept for reuse, and the largest one worth keeping.
const MAX_SPARE: usize = 4;
const MAX_SPARE_CAPACITY: usize = 16 << 20;

/// Takes staged runs, writes each with one `pwrite`, hands them to the sync thread.
pub(crate) fn write_loop(shared: &Shared) {
    let mut writer = DirectWriter::new(shared.direct_io);
    loop {
        let (callbacks, runs, framed) = {
            let mut q = lock(&shared.queue);
            while q.callbacks.is_empty() && q.staged.is_empty() && !q.stop {
                shared.drained.notify_all();
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.callbacks.is_empty() && q.staged.is_empty() {
                q.writer_exited = true;
                shared.to_sync.notify_one();
                return;
            }
            // Framed while still staged: readers see each run's bytes throughout.
            let framed = frame_runs(shared, &mut writer, &mut q.staged);
            let runs: Vec<Arc<Run>> = std::mem::take(&mut q.staged).into_iter().map(Arc::new).collect();
            q.in_flight.clone_from(&runs);
            q.writing = true;
            (std::mem::take(&mut q.callbacks), runs, framed)
        };
        let written = framed.and_then(|()| write_runs(shared, &mut writer, &runs));
        if let Err(e) = written {
            shared.poison.set(e.to_string());
        }
        let bytes: u64 = runs.iter().map(|r| r.bytes().len() as u64).sum();
        shared.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        let files = written_files(&runs, &writer);
        let mut q = lock(&shared.queue);
        q.in_flight.clear();
        q.writing = false;
        recycle(&mut q.spare, runs);
        q.written.push(Written { files, callbacks });
        drop(q);
        shared.to_sync.notify_one();
    }
}

/// The files of `runs` in first-written order, each with the end of its data.
fn written_files(runs: &[Arc<Run>], writer: &DirectWriter) -> Vec<WrittenFile> {
    let mut files: Vec<WrittenFile> = Vec::new();
    for r in runs {
        let end = r.end();
        match files.iter_mut().find(|f| Arc::ptr_eq(&f.file, &r.file)) {
            Some(f) => f.end = f.end.max(end),
            None => files.push(WrittenFile {
                file: r.file.clone(),
                path: r.path.clone(),
                end,
                direct: writer.is_direct(&r.file),
            }),
        }
    }
    files
}

/// Frames the runs for direct writes (see `direct_write.rs`), in write order.
fn frame_runs(shared: &Shared, writer: &mut DirectWriter, runs: &mut [Run]) -> Result<(), LogError> {
    shared.poison.check()?;
    for r in runs {
        writer
            .prepare(r)
            .map_err(|e| LogError::io("read segment block", &r.path, e))?;
    }
    Ok(())
}

fn write_runs(shared: &Shared, writer: &mut DirectWriter, runs: &[Arc<Run>]) -> Result<(), LogError> {
    shared.poison.check()?;
    for r in runs {
        writer
            .write(r)
            .map_err(|e| LogError::io("write segment", &r.path, e))?;
    }
    Ok(())
}

fn recycle(spare: &mut Vec<Vec<u8>>, runs: Vec<Arc<Run>>) {
    for run in runs {
        if let Ok(r) = Arc::try_unwrap(run)
            && spare.len() < MAX_SPARE
        {
            let mut buf = r.into_buffer();
            if buf.capacity() <= MAX_SPARE_CAPACITY {
                buf.clear();
                spare.push(buf);
            }
        }
    }
}

/// Takes every written group, fsyncs their files once, completes callbacks in order.
pub(crate) fn sync_loop(shared: &Shared) {
    let mut trim = Trim::new(shared.page_cache_window);
    loop {
        let groups = {
            let mut q = lock(&shared.queue);
            while q.written.is_empty() && !q.writer_exited {
                q = shared.to_sync.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.written.is_empty() {
                shared.drained.notify_all();
                return;
            }
            q.syncing = true;
            std::mem::take(&mut q.written)
        };
        let callbacks: usize = groups.iter().map(|g| g.callbacks.len()).sum();
        let span = tracing::trace_span!("group_commit", appends = callbacks, groups = groups.len());
        let _g = span.enter();
        let result = sync_files(shared, &groups);
        if let Err(e) = &result {
            shared.poison.set(e.to_string());
        }
        shared.counters.rounds.fetch_add(1, Ordering::Relaxed);
        shared
            .counters
            .appends
            .fetch_add(callbacks as u64, Ordering::Relaxed);
        // Durable (or failed) from here on: a drain need not wait for the callbacks, and a
        // callback that calls back into the log must not wait for this thread.
        lock(&shared.queue).syncing = false;
        shared.drained.notify_all();
        for cb in groups.into_iter().flat_map(|g| g.callbacks) {
            let r = match &result {
                Ok(_) => Ok(()),
                Err(_) => shared.poison.check(),
            };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(r))).is_err() {
                tracing::error!("a flush callback panicked; continuing with the next");
            }
        }
        // After the callbacks: dropping pages is never on an acknowledgement's path. A
        // file written directly has no pages of its own writes to drop.
        if let Ok(synced) = result {
            for (file, end) in synced {
                for (f, start, end) in trim.synced(&FileRef(file), end) {
                    fsutil::drop_pages(&f.0, start, end);
                }
            }
        }
    }
}

/// fsyncs every file written in `groups` once; returns each written through the page
/// cache with its durable end.
fn sync_files(shared: &Shared, groups: &[Written]) -> Result<Vec<(Arc<std::fs::File>, u64)>, LogError> {
    // A write that failed poisoned the log: its callbacks must fail, not report durable.
    shared.poison.check()?;
    // Each file once, with the end of everything written to it (groups are in log order).
    let mut files: Vec<&WrittenFile> = Vec::new();
    for w in groups.iter().flat_map(|g| &g.files) {
        match files.iter_mut().find(|f| Arc::ptr_eq(&f.file, &w.file)) {
            Some(f) if f.end < w.end => *f = w,
            Some(_) => {}
            None => files.push(w),
        }
    }
    for w in &files {
        if let Some(f) = &shared.faults {
            f.before_sync()
                .map_err(|e| LogError::io("fdatasync segment", &w.path, e))?;
        }
        w.file
            .sync_data()
            .map_err(|e| LogError::io("fdatasync segment", &w.path, e))?;
        if shared.track_synced {
            synced::record(&w.path, w.end).map_err(|e| LogError::io("record synced length", &w.path, e))?;
        }
    }
    Ok(files
        .into_iter()
        .filter(|w| !w.direct)
        .map(|w| (w.file.clone(), w.end))
        .collect())
}
