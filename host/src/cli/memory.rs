//! Handing startup-only memory back to the kernel once the worker has settled.
//!
//! Starting touches much more than a running worker needs: argument parsing, logging, TLS and
//! HTTP setup, loading (and on the first start compiling) the job types, attaching the sections.
//! Measured with one idle section (docs/benchmarks.md, "Worker vs reference"): about 18 MiB
//! resident after a warm start, of which only ~2 MiB is heap; the rest is clean pages of the
//! executable (~12 MiB of code and read-only data touched once), the compiled job type and the
//! shared libraries. After a cold start the malloc arenas also keep ~20 MiB freed by the compiler.
//! The idle working set is ~6 MiB. (The bundled job type's compiled code now runs from the
//! executable's own pages, `runtime::code_memory`, so this release hands it back with them.)
//!
//! So, a few seconds after the start line (and once more a minute later, when every section has
//! long attached), the worker
//! - returns the free pages of every malloc arena (`malloc_trim(0)`), and
//! - asks the kernel to reclaim the clean, read-only file-backed pages mapped only by this
//!   process (`madvise(MADV_PAGEOUT)` on non-writable file mappings). Pages still in use fault
//!   straight back in (from the page cache, or from disk if it was dropped); nothing is lost,
//!   and writable or anonymous memory is never touched. Read-only data is marked
//!   `MADV_RANDOM` first, so that it comes back page by page, not with its neighbours.
//!
//! Both are hints; failures are ignored. Linux/glibc only; elsewhere this does nothing.

use std::time::Duration;

/// When, after the start line, the release runs.
pub const RELEASE_AFTER: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(60)];

/// Runs [`release`] at each of [`RELEASE_AFTER`] (a background task; ends by itself).
pub fn schedule_release() {
    tokio::spawn(async {
        let mut waited = Duration::ZERO;
        for at in RELEASE_AFTER {
            tokio::time::sleep(at.saturating_sub(waited)).await;
            waited = at;
            // Walking /proc/self/maps and the madvise calls take a millisecond or two.
            let _ = tokio::task::spawn_blocking(release).await;
        }
    });
}

/// One malloc arena for every thread. glibc gives threads that allocate at the same time arenas
/// of their own (up to 8 per CPU), and each keeps its own free memory and fragments: with 100
/// idle sections the heap was spread over four arenas holding 8.9 MiB, against 8.2 MiB in one
/// (docs/benchmarks.md, "Scale and idle cost"). A worker is mostly asleep, so the lock they would
/// contend for costs nothing measurable. Call before any thread starts.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's tuning; M_ARENA_MAX is a documented knob.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

/// Returns free heap pages and unshared clean file pages to the kernel.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
        unsafe { libc::malloc_trim(0) };
    }
    #[cfg(target_os = "linux")]
    page_out_file_mappings();
}

#[cfg(target_os = "linux")]
fn page_out_file_mappings() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for (start, end, executable) in read_only_file_mappings(&maps) {
        let (addr, len) = (start as *mut libc::c_void, end - start);
        // Read-only data (not code): fault its pages back one at a time. By default a fault
        // reads ahead and maps its neighbours too, which brought ~0.6 MiB of the executable's
        // read-only data back that the idle worker does not use (docs/benchmarks.md, "Scale
        // and idle cost"). Code keeps the default: no gain was measured there, and a path that
        // runs again after the release should not fault in page by page.
        if !executable {
            // SAFETY: MADV_RANDOM only changes how this read-only file mapping is read back.
            unsafe { libc::madvise(addr, len, libc::MADV_RANDOM) };
        }
        // SAFETY: MADV_PAGEOUT on a read-only file mapping of this process only drops clean
        // pages from memory; their contents stay in the file and fault back in on access.
        unsafe { libc::madvise(addr, len, libc::MADV_PAGEOUT) };
    }
}

/// `(start, end, executable)` of every mapping of a file (a path) that is not writable.
fn read_only_file_mappings(maps: &str) -> Vec<(usize, usize, bool)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let path = f.nth(3)?;
            if !path.starts_with('/') || perms.contains('w') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let a = usize::from_str_radix(a, 16).ok()?;
            let b = usize::from_str_radix(b, 16).ok()?;
            (b > a).then_some((a, b, perms.contains('x')))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_file_mappings_are_chosen() {
        let maps = "\
5604b5168000-5604b57cd000 r--p 00000000 fe:00 10119710   /usr/bin/blobhub-worker
5604b57cd000-5604b6900000 r-xp 00664000 fe:00 10119710   /usr/bin/blobhub-worker
5604b69a0000-5604b69b0000 rw-p 01836000 fe:00 10119710   /usr/bin/blobhub-worker
5604f50b8000-5604f5542000 rw-p 00000000 00:00 0          [heap]
7f57fc3a7000-7f57fc4f9000 r-xp 00000000 00:00 0
7ffc1000-7ffc3000 r-xp 00000000 00:00 0                  [vdso]
";
        assert_eq!(
            read_only_file_mappings(maps),
            vec![
                (0x5604b5168000, 0x5604b57cd000, false),
                (0x5604b57cd000, 0x5604b6900000, true)
            ]
        );
    }

    #[test]
    fn release_is_harmless() {
        release();
        release();
    }
}
