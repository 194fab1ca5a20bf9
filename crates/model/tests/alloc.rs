//! Steady-state forward passes do not allocate: a counting global allocator
//! checks that the second `forward_batch` of a batch (tokenization included)
//! performs no heap allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use profiled_model::testing::{Rng, SyntheticSpec, random_user, write_synthetic_model};
use profiled_model::{Encoder, Workspace};

struct Counting;

thread_local! {
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the counter
// is a thread-local `Cell` that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_forward_does_not_allocate() {
    let dir = tempfile::tempdir().expect("tmp");
    let spec = SyntheticSpec::default();
    write_synthetic_model(dir.path(), &spec).expect("write");
    let enc = Encoder::load(dir.path()).expect("load");
    let mut rng = Rng::new(3);
    let users: Vec<_> = (0..32)
        .map(|_| random_user(&mut rng, spec.items, spec.max_events))
        .collect();
    let mut ws = Workspace::new();
    let first = enc.forward_batch(&users, &mut ws).expect("first").len();
    assert_eq!(first, users.len());
    let before = COUNT.with(Cell::get);
    let n = enc.forward_batch(&users, &mut ws).expect("second").len();
    let smaller = enc
        .forward_batch(&users[..5], &mut ws)
        .expect("smaller")
        .len();
    let after = COUNT.with(Cell::get);
    assert_eq!((n, smaller), (32, 5));
    assert_eq!(
        after - before,
        0,
        "steady-state forward allocated {} times",
        after - before
    );
}
