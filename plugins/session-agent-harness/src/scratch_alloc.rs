//! Large short-lived allocations from one reused region, so that they do not spread over the
//! guest's heap.
//!
//! A component's linear memory never shrinks and every page it has written stays resident, so
//! what a section costs when idle is the union of all pages its heap ever touched. Reading or
//! writing a state file (`serde_yaml`, i.e. libyaml) allocates 16 to 48 KiB buffers of which
//! it writes a few hundred bytes; the system allocator places them wherever its heap has room at
//! the time and writes its chunk headers at both ends, so an attached, idle section had touched
//! 12 of its heap's pages, half of them for those buffers (docs/benchmarks.md, issue 14). Here an
//! allocation of [`LARGE`] bytes or more is carved from the start of a region of its own (in
//! `.bss`: pages nobody writes are not resident) and the region is reused from its start as soon
//! as everything carved from it is freed, so the same few pages serve every such buffer. What
//! does not fit, or asks for zeroed memory or an unusual alignment, goes to the system allocator.
//! A large block kept for long (a big line of agent output, say) holds the region until it is
//! freed; meanwhile later blocks fill the rest and then go to the system allocator, as all did
//! before.
//!
//! For a component only: it keeps its state without locks, which is sound because a
//! wasm32-wasip2 component runs on one thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};

/// Allocations of at least this many bytes go to the region when it has room.
pub const LARGE: usize = 16 * 1024;

/// The region's alignment, and the largest alignment it serves.
const ALIGN: usize = 4096;

#[repr(C, align(4096))]
struct Region<const N: usize>([u8; N]);

/// The allocator: a region of `N` bytes for large allocations, the system allocator for the rest.
pub struct ScratchAlloc<const N: usize> {
    region: UnsafeCell<Region<N>>,
    /// The offset of the region's first free byte.
    next: Cell<usize>,
    /// Allocations carved from the region and not yet freed.
    live: Cell<usize>,
}

// SAFETY: used only where there is a single thread (a wasm32-wasip2 component; the unit tests
// use an instance of their own on one thread), so the cells are never accessed concurrently.
unsafe impl<const N: usize> Sync for ScratchAlloc<N> {}

impl<const N: usize> ScratchAlloc<N> {
    pub const fn new() -> Self {
        Self {
            region: UnsafeCell::new(Region([0; N])),
            next: Cell::new(0),
            live: Cell::new(0),
        }
    }

    fn base(&self) -> *mut u8 {
        self.region.get().cast()
    }

    fn owns(&self, ptr: *mut u8) -> bool {
        let (base, p) = (self.base() as usize, ptr as usize);
        base <= p && p < base + N
    }

    /// A block of the region for `layout`, if it has room.
    fn carve(&self, layout: Layout) -> Option<*mut u8> {
        if layout.size() < LARGE || layout.align() > ALIGN {
            return None;
        }
        let start = self.next.get().checked_next_multiple_of(layout.align())?;
        let end = start.checked_add(layout.size())?;
        if end > N {
            return None;
        }
        self.next.set(end);
        self.live.set(self.live.get() + 1);
        // SAFETY: `start < end <= N`: inside the region.
        Some(unsafe { self.base().add(start) })
    }

    fn release(&self) {
        let live = self.live.get() - 1;
        self.live.set(live);
        if live == 0 {
            self.next.set(0);
        }
    }
}

impl<const N: usize> Default for ScratchAlloc<N> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: blocks of the region are disjoint while live (the offset only grows until every block
// is freed) and aligned as asked; everything else is the system allocator's.
unsafe impl<const N: usize> GlobalAlloc for ScratchAlloc<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.carve(layout) {
            Some(p) => p,
            // SAFETY: the caller's contract, passed on.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Zeroing a reused block would write all of its pages: the system allocator's fresh
        // memory is zero already.
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.owns(ptr) {
            self.release();
        } else {
            // SAFETY: not the region's, so the system allocator's (the caller's contract).
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(ptr) && new_size < LARGE {
            // SAFETY: the system allocator's block (the caller's contract).
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller's contract: `new_size` is valid for `layout.align()`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: the caller's contract, passed on; the copy stays within both blocks.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn large_blocks_reuse_the_region_once_all_are_freed() {
        let a = ScratchAlloc::<{ 96 * 1024 }>::new();
        unsafe {
            let raw = a.alloc(layout(16 * 1024));
            let buffer = a.alloc(layout(48 * 1024));
            assert!(a.owns(raw) && a.owns(buffer));
            assert_eq!(
                buffer as usize - raw as usize,
                16 * 1024,
                "disjoint, in order"
            );
            raw.write_bytes(1, 16 * 1024);
            buffer.write_bytes(2, 48 * 1024);
            assert_eq!(
                *raw.add(16 * 1024 - 1),
                1,
                "not overwritten by the next block"
            );
            // No room left for another 48 KiB: the system allocator's.
            let other = a.alloc(layout(48 * 1024));
            assert!(!other.is_null() && !a.owns(other));
            a.dealloc(other, layout(48 * 1024));
            a.dealloc(raw, layout(16 * 1024));
            let again = a.alloc(layout(16 * 1024));
            assert_ne!(
                again, raw,
                "one block is still live: the region is not reused yet"
            );
            a.dealloc(buffer, layout(48 * 1024));
            a.dealloc(again, layout(16 * 1024));
            assert_eq!(
                a.alloc(layout(20 * 1024)),
                raw,
                "all freed: from the start again"
            );
        }
    }

    #[test]
    fn small_zeroed_and_over_aligned_blocks_are_the_systems() {
        let a = ScratchAlloc::<{ 64 * 1024 }>::new();
        unsafe {
            let small = a.alloc(layout(100));
            assert!(!a.owns(small));
            a.dealloc(small, layout(100));
            let zeroed = a.alloc_zeroed(layout(LARGE));
            assert!(!a.owns(zeroed) && *zeroed == 0);
            a.dealloc(zeroed, layout(LARGE));
            let aligned = Layout::from_size_align(LARGE, 2 * ALIGN).unwrap();
            let p = a.alloc(aligned);
            assert!(!a.owns(p));
            a.dealloc(p, aligned);
        }
    }

    #[test]
    fn realloc_keeps_the_contents_across_both_allocators() {
        let a = ScratchAlloc::<{ 64 * 1024 }>::new();
        unsafe {
            let p = a.alloc(layout(1000));
            p.write_bytes(7, 1000);
            let big = a.realloc(p, layout(1000), 20 * 1024);
            assert!(a.owns(big));
            assert_eq!(*big.add(999), 7);
            big.add(1000).write_bytes(8, 20 * 1024 - 1000);
            let small = a.realloc(big, layout(20 * 1024), 2000);
            assert!(!a.owns(small));
            assert_eq!((*small.add(999), *small.add(1000)), (7, 8));
            a.dealloc(small, layout(2000));
            assert_eq!(a.live.get(), 0);
            assert_eq!(a.next.get(), 0);
        }
    }
}
