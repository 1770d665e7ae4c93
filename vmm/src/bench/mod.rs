//! `--run bench`: the VMM's half of the IPI benchmark.
//!
//! The guest measures each case with the TSC and brackets it with markers
//! (`shared::bench`); [`collect`] snapshots every vCPU's KVM statistics at
//! each marker and keeps the guest's results; [`report`] derives the numbers
//! and [`render`] prints them as a table and JSON (schema in README.md,
//! "Benchmark"); [`plot`] draws the latency distributions as SVG, and
//! [`fanout_plot`] the fan-out curve; [`breakdown`] says where a target's
//! instructions go.

pub mod breakdown;
pub mod collect;
pub mod fanout_plot;
pub mod plot;
pub mod render;
pub mod report;

pub use collect::{BenchRun, CaseData, Collector};
pub use report::{Report, RunInfo};
