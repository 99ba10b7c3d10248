//! The guest's global allocator: a bump arena for the short-lived memory of one hook call
//! (the host's lowered arguments, the decision being built, the returned strings), over
//! the system allocator for everything else. Each hook call allocates a few dozen small
//! strings and frees them all by the end of the call's post-return; bumping a pointer and
//! resetting the arena when the last of them is freed is far cheaper than dlmalloc for
//! each. Not here: which memory a hook allocates.
//!
//! Safety argument: an arena block is only reused after `live` (arena blocks not yet
//! freed) returned to zero, so no live block is ever handed out twice. Memory that must
//! outlive a call (the configured policy) is allocated with the arena off
//! ([`outside_arena`]); a block that is never freed merely pins the arena, and allocations
//! then fall back to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Space(UnsafeCell<[u8; SIZE]>);

// SAFETY: wasm32-wasip2 components are single-threaded; the counters below serialise use.
unsafe impl Sync for Space {}

static SPACE: Space = Space(UnsafeCell::new([0; SIZE]));
/// Next free offset in `SPACE`.
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// Arena blocks handed out and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Off while building state that outlives the call.
static OFF: AtomicBool = AtomicBool::new(false);

/// The allocator (installed as `#[global_allocator]` on wasm32).
pub struct HookArena;

fn base() -> usize {
    SPACE.0.get() as usize
}

fn in_arena(ptr: *mut u8) -> bool {
    let p = ptr as usize;
    p >= base() && p < base() + SIZE
}

fn bump(layout: Layout) -> Option<*mut u8> {
    if OFF.load(Ordering::Relaxed) {
        return None;
    }
    let start = base() + NEXT.load(Ordering::Relaxed);
    let aligned = start.checked_add(layout.align() - 1)? & !(layout.align() - 1);
    let end = aligned.checked_add(layout.size())?;
    if end > base() + SIZE {
        return None;
    }
    NEXT.store(end - base(), Ordering::Relaxed);
    LIVE.fetch_add(1, Ordering::Relaxed);
    // The pointer is derived from SPACE's own pointer, so it keeps its provenance.
    Some(SPACE.0.get().cast::<u8>().wrapping_add(aligned - base()))
}

fn release() {
    if LIVE.fetch_sub(1, Ordering::Relaxed) == 1 {
        NEXT.store(0, Ordering::Relaxed);
    }
}

// SAFETY: blocks are disjoint while live (see the module docs) and aligned as asked;
// everything else is delegated to `System`.
unsafe impl GlobalAlloc for HookArena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match bump(layout) {
            Some(ptr) => ptr,
            // SAFETY: forwarded with the caller's layout.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if in_arena(ptr) {
            release();
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !in_arena(ptr) {
            // SAFETY: `ptr` came from `System` with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: a fresh block of `new_layout`; the copy covers what both blocks hold.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                release();
            }
            new
        }
    }
}

/// Run `f` with the arena off, for memory that outlives the hook call (configure).
pub fn outside_arena<T>(f: impl FnOnce() -> T) -> T {
    let was = OFF.swap(true, Ordering::Relaxed);
    let out = f();
    OFF.store(was, Ordering::Relaxed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // The only test touching the arena's statics (natively it is not the global allocator).
    #[test]
    fn blocks_are_disjoint_aligned_and_reused_only_after_all_are_freed() {
        let a = Layout::from_size_align(24, 8).unwrap();
        let b = Layout::from_size_align(100, 16).unwrap();
        unsafe {
            let p = HookArena.alloc(a);
            let q = HookArena.alloc(b);
            assert!(in_arena(p) && in_arena(q));
            assert_eq!(q as usize % 16, 0);
            assert!(q as usize >= p as usize + 24, "blocks overlap");
            HookArena.dealloc(p, a);
            // One block still live: no reuse.
            let r = HookArena.alloc(a);
            assert!(r as usize > q as usize);
            // Growing copies the contents.
            r.write(7);
            let r2 = HookArena.realloc(r, a, 4096);
            assert_eq!(r2.read(), 7);
            HookArena.dealloc(q, b);
            HookArena.dealloc(r2, Layout::from_size_align(4096, 8).unwrap());
            // All freed: the arena starts over.
            let s = HookArena.alloc(a);
            assert_eq!(s, p);
            HookArena.dealloc(s, a);
            // Long-lived memory and blocks that do not fit come from the system.
            let t = outside_arena(|| HookArena.alloc(a));
            assert!(!in_arena(t));
            HookArena.dealloc(t, a);
            let big = Layout::from_size_align(SIZE + 1, 8).unwrap();
            let u = HookArena.alloc(big);
            assert!(!in_arena(u));
            HookArena.dealloc(u, big);
        }
    }
}
