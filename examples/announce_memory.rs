//! Heap bytes held by the LoadBalancer announce decision (`AnnounceModel`) for N
//! ClusterIP Services x M endpoints (the shape of `scripts/bench agent`) plus a few
//! LoadBalancer Services of ours, and the model's peak while it takes the first list.
//!   cargo run --release --example announce_memory -- [services] [endpoints] [lb-services]
#![allow(missing_docs)]
// Counting the peak needs a global allocator of our own around jemalloc (jemalloc's
// statistics give the bytes allocated now, not the highest value in between); its
// `GlobalAlloc` impl is unsafe by definition and only forwards to jemalloc.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "support/bench_objects.rs"]
mod bench_objects;

use ipvs_proxy::lb::decision::AnnounceModel;
use ipvs_proxy::source::static_dir::parse_manifests;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let pointer = unsafe { tikv_jemallocator::Jemalloc.alloc(layout) };
        if !pointer.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the pointer came from `alloc` with this layout.
        unsafe { tikv_jemallocator::Jemalloc.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let moved = unsafe { tikv_jemallocator::Jemalloc.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = CURRENT.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes requested and not freed (the sizes asked for, not jemalloc's size classes).
fn requested() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// Bytes jemalloc holds for the program (size classes included).
fn allocated() -> usize {
    tikv_jemalloc_ctl::epoch::advance().expect("jemalloc epoch");
    tikv_jemalloc_ctl::stats::allocated::read().expect("jemalloc stats")
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / 1048576.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10000);
    let per: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let lb: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(20);
    // The same nodes as scripts/bench-agent: one endpoint in 50 on this node (by the
    // sum of its address's bytes), the others over 100 nodes.
    let text = bench_objects::manifest_text(n, per, lb, |v| {
        let last: u32 = v.to_be_bytes().iter().map(|b| u32::from(*b)).sum();
        if last % 50 == 0 {
            "node".to_string()
        } else {
            format!("node-{}", last % 100)
        }
    });
    let manifests = parse_manifests("services.json", &text).expect("manifests parse");
    drop(text);

    let (base_requested, base_allocated) = (requested(), allocated());
    PEAK.store(base_requested, Ordering::Relaxed);
    let mut model = AnnounceModel::new("node", None);
    model.replace_all(&manifests.services, &manifests.slices);
    let _ = model.take_touched();
    let held_requested = requested() - base_requested;
    let held_allocated = allocated() - base_allocated;
    let peak = PEAK.load(Ordering::Relaxed) - base_requested;
    println!(
        "announce_model_services: {} ({lb} LoadBalancer)",
        manifests.services.len()
    );
    println!("announce_model_decisions: {}", model.services().len());
    println!("announce_model_requested_mib: {:.2}", mib(held_requested));
    println!("announce_model_allocated_mib: {:.2}", mib(held_allocated));
    println!(
        "announce_model_bytes_per_slice: {:.0}",
        held_allocated as f64 / manifests.slices.len() as f64
    );
    println!("announce_model_first_list_peak_mib: {:.2}", mib(peak));

    // A relist of the same objects (the Kubernetes source after a watch expired).
    PEAK.store(requested(), Ordering::Relaxed);
    let before = requested();
    model.replace_all(&manifests.services, &manifests.slices);
    println!(
        "announce_model_relist_peak_mib: {:.2}",
        mib(PEAK.load(Ordering::Relaxed) - before)
    );
}
