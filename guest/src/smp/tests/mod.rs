//! Host tests of the smp core: threads as CPUs (see `harness.rs`).
//!
//! One file per area; every test names the semantic it checks. Callbacks
//! keep their state in `static`s declared inside the test function, so tests
//! running in parallel never share state.

mod harness;

mod any;
mod async_calls;
mod concurrency;
mod cpuhp;
mod fast_path;
mod irq_work;
mod many;
mod offline;
mod single;
mod stall;
mod sync_release;
