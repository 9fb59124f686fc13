//! The connector's global allocator on `wasm32-unknown-unknown`: [talc],
//! starting in the free end of the initial linear memory. Feature
//! `allocator`, on by default; turn it off to bring your own
//! `#[global_allocator]`.
//!
//! Why: the host gives every call a fresh instance, so a connector's heap
//! lives for one call. Rust's default wasm allocator (dlmalloc) grows linear
//! memory on its first allocation even when the initial memory has room,
//! and every growth makes the host change the page protection of its
//! pooled memory slot twice (on growth, and when the slot is reset for the
//! next instance), each a system call with a TLB shootdown. Starting in
//! the initial memory, which `switchyard plugin build` links with a 1 MiB
//! heap (`--initial-heap`), lets a typical call finish without growing
//! memory at all; larger heaps grow in steps of [`MIN_GROWTH_PAGES`].
//!
//! Not used on `wasm32-wasip2`: there wasi-libc's allocator already starts
//! at `__heap_base`, and two allocators must not share that region.
//!
//! [talc]: https://crates.io/crates/talc

use core::alloc::Layout;
use core::arch::wasm32;
use core::ptr::NonNull;
use talc::base::Talc;
use talc::base::binning::Binning;
use talc::cell::TalcSyncCell;
use talc::wasm::WasmBinning;

const PAGE: usize = 64 * 1024;

/// Smallest growth once the initial heap is used up: 4 pages (256 KiB),
/// so batch-sized heaps grow (and cost the host a protection change) a
/// few times rather than once per large allocation.
pub const MIN_GROWTH_PAGES: usize = 4;

unsafe extern "C" {
    /// Set by the linker: the first byte after static data (and the
    /// stack); nothing else uses memory from here to the end of memory.
    static __heap_base: u8;
}

/// A talc memory source: first the rest of the initial memory, then
/// `memory.grow`, extending the heap when the new pages follow it.
#[derive(Debug)]
pub struct InitialThenGrow {
    claimed_initial: bool,
    heap_end: Option<NonNull<u8>>,
}

impl InitialThenGrow {
    pub const fn new() -> Self {
        InitialThenGrow {
            claimed_initial: false,
            heap_end: None,
        }
    }
}

impl Default for InitialThenGrow {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `acquire` only claims memory no one else uses (from `__heap_base`
// to the end of memory, then freshly grown pages) and touches the allocator
// only through the `talc` it is given.
unsafe impl talc::source::Source for InitialThenGrow {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        if !talc.source.claimed_initial {
            talc.source.claimed_initial = true;
            let base = (&raw const __heap_base).cast_mut();
            let end = wasm32::memory_size(0) * PAGE;
            let size = end.saturating_sub(base as usize);
            // SAFETY: [base, end) is unused memory (see `__heap_base`).
            talc.source.heap_end = unsafe { talc.claim(base, size) };
            if talc.source.heap_end.is_some() {
                return Ok(());
            }
        }
        // Enough for the allocation plus talc's chunk and heap overhead;
        // talc asks again if it is not.
        let needed = layout.size() + layout.align() + 4 * talc::base::CHUNK_UNIT;
        let needed_pages = needed.div_ceil(PAGE);
        let mut pages = needed_pages.max(MIN_GROWTH_PAGES);
        let mut previous = wasm32::memory_grow(0, pages);
        if previous == usize::MAX && pages > needed_pages {
            // Near the memory limit: what this allocation needs may still fit.
            pages = needed_pages;
            previous = wasm32::memory_grow(0, pages);
        }
        if previous == usize::MAX {
            return Err(());
        }
        let grown = (previous * PAGE) as *mut u8;
        let grown_end = grown.wrapping_add(pages * PAGE);
        if let Some(heap_end) = talc.source.heap_end.take()
            && heap_end.as_ptr() == grown
        {
            // SAFETY: the grown pages directly follow this heap.
            talc.source.heap_end = Some(unsafe { talc.extend(heap_end, grown_end) });
            return Ok(());
        }
        // SAFETY: freshly grown pages, used by no one.
        talc.source.heap_end = unsafe { talc.claim(grown, pages * PAGE) };
        talc.source.heap_end.map(|_| ()).ok_or(())
    }
}

#[global_allocator]
static ALLOCATOR: TalcSyncCell<InitialThenGrow, WasmBinning> =
    TalcSyncCell::new_wasm(InitialThenGrow::new());
