//! `--plot PATH.svg` also writes `PATH-fanout.svg`: the fan-out curve, how
//! `smp_call_function_many(wait)` grows with the number of target CPUs.
//! Two panels over the same logarithmic target axis: the latency per
//! operation (p50 solid, p99 dashed) and the sender's guest instructions
//! per operation, one color per IPI mode. Hand-written SVG like `plot.rs`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use shared::bench::{IpiMode, Status};

use super::plot::{COLORS, decade_label, esc, header};
use super::report::{CaseReport, Report};

const WIDTH: f64 = 760.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 560.0;
const LEGEND_X: f64 = 580.0;
/// Top and bottom of each panel.
const PANELS: [(f64, f64); 2] = [(80.0, 300.0), (360.0, 580.0)];
const HEIGHT: f64 = 630.0;
const MODES: [IpiMode; 3] = [IpiMode::Phys, IpiMode::Shorthand, IpiMode::Cluster];

/// `PATH.svg` -> `PATH-fanout.svg` (`PATH` -> `PATH-fanout.svg` without
/// an extension).
pub fn sibling_path(plot: &Path) -> PathBuf {
    let stem = plot
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    plot.with_file_name(format!("{stem}-fanout.svg"))
}

/// Instruction counts as plain numbers.
fn count_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", (v / 1e6).round())
    } else if v >= 1e3 {
        format!("{}k", (v / 1e3).round())
    } else {
        format!("{}", v.round())
    }
}

/// A logarithmic axis over `lo..=hi` (both above 0), whole decades.
struct LogAxis {
    d0: f64,
    d1: f64,
}

impl LogAxis {
    fn new(lo: f64, hi: f64) -> LogAxis {
        let d0 = lo.log10().floor();
        LogAxis {
            d0,
            d1: hi.log10().ceil().max(d0 + 1.0),
        }
    }
    /// Position of `v` from `a` (at the axis' low end) to `b`.
    fn at(&self, v: f64, a: f64, b: f64) -> f64 {
        a + (v.log10() - self.d0) / (self.d1 - self.d0) * (b - a)
    }
}

/// One panel: `value` of each point, per mode.
fn panel(
    s: &mut String,
    rows: &[&CaseReport],
    (top, bottom): (f64, f64),
    title: &str,
    values: &dyn Fn(&CaseReport) -> Vec<(f64, bool)>,
    tick: &dyn Fn(f64) -> String,
    max_targets: u32,
) {
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|c| values(c))
        .map(|(v, _)| v)
        .filter(|v| *v > 0.0)
        .collect();
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
        top - 8.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        RIGHT - LEFT,
        bottom - top
    );
    let (Some(lo), Some(hi)) = (
        all.iter().copied().reduce(f64::min),
        all.iter().copied().reduce(f64::max),
    ) else {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">no data</text>"#,
            LEFT + 10.0,
            top + 20.0
        );
        return;
    };
    let xs = LogAxis::new(1.0, f64::from(max_targets.max(2)));
    let ys = LogAxis::new(lo, hi);
    let x = |n: f64| xs.at(n, LEFT, RIGHT);
    let y = |v: f64| ys.at(v.max(lo), bottom, top);
    // Target grid at powers of two.
    let mut n = 1u32;
    while n <= max_targets.max(1) {
        let gx = x(f64::from(n));
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{top}" x2="{gx:.1}" y2="{bottom}" stroke="#eee"/><text x="{gx:.1}" y="{}" text-anchor="middle">{n}</text>"##,
            bottom + 16.0
        );
        n = n.saturating_mul(2);
    }
    let mut d = ys.d0;
    while d <= ys.d1 + 1e-9 {
        let gy = y(10f64.powf(d));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{RIGHT}" y2="{gy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            gy + 4.0,
            esc(&tick(10f64.powf(d)))
        );
        d += 1.0;
    }
    for (i, mode) in MODES.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, Vec<(f64, bool)>)> = rows
            .iter()
            .filter(|c| c.ipi_mode == *mode)
            .map(|c| (f64::from(c.target_count), values(c)))
            .collect();
        let series = pts.first().map_or(0, |(_, v)| v.len());
        for k in 0..series {
            let line: Vec<(f64, f64, bool)> = pts
                .iter()
                .filter_map(|(n, v)| v.get(k).map(|&(val, dashed)| (*n, val, dashed)))
                .filter(|&(_, v, _)| v > 0.0)
                .collect();
            let dash = if line.first().is_some_and(|p| p.2) {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let coords: Vec<String> = line
                .iter()
                .map(|&(n, v, _)| format!("{:.1},{:.1}", x(n), y(v)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
                coords.join(" ")
            );
            for &(n, v, _) in &line {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#,
                    x(n),
                    y(v)
                );
            }
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">target CPUs (log scale)</text>"#,
        (LEFT + RIGHT) / 2.0,
        bottom + 34.0
    );
}

/// Draws the report's fan-out curve.
pub fn svg(r: &Report) -> String {
    let rows: Vec<&CaseReport> = r
        .fanout
        .iter()
        .filter(|c| c.status == Status::Ok && c.target_count > 0)
        .collect();
    let max_targets = rows.iter().map(|c| c.target_count).max().unwrap_or(1);
    let insn = r.counter("insn_emulation");
    let mut s = String::new();
    header(
        &mut s,
        (WIDTH, HEIGHT),
        LEFT,
        "smpcall fan-out: smp_call_function_many(wait) to N CPUs",
        r,
    );
    if r.emulation_note().is_some() {
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="56" fill="#b00000">Guest instructions are emulated on this host: times reflect instruction counts, not bare-metal KVM.</text>"##
        );
    }
    panel(
        &mut s,
        &rows,
        PANELS[0],
        "latency per operation (p50 solid, p99 dashed)",
        &|c| vec![(c.ns.p50, false), (c.ns.p99, true)],
        &|v| decade_label(v),
        max_targets,
    );
    panel(
        &mut s,
        &rows,
        PANELS[1],
        "sender guest instructions per operation",
        &|c| match (insn, c.sender_part()) {
            (Some(i), Some(p)) => p
                .per_op
                .get(i)
                .map(|&v| vec![(v, false)])
                .unwrap_or_default(),
            _ => Vec::new(),
        },
        &|v| count_label(v),
        max_targets,
    );
    for (i, mode) in MODES.iter().enumerate() {
        let ly = PANELS[0].0 + 14.0 + 20.0 * i as f64;
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            s,
            r#"<line x1="{LEGEND_X}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="{color}" stroke-width="3"/><text x="{}" y="{:.1}">{}</text>"#,
            ly - 4.0,
            LEGEND_X + 22.0,
            ly - 4.0,
            LEGEND_X + 28.0,
            ly,
            esc(mode.name())
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{LEGEND_X}" y="{}" font-size="11">shorthand: all others only</text>"#,
        PANELS[0].0 + 84.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plot::tests::well_formed;
    use crate::bench::report::tests::{sample_info, sample_run};
    use shared::bench::Case;

    #[test]
    fn sibling_is_named_after_the_plot() {
        assert_eq!(
            sibling_path(Path::new("/tmp/b.svg")),
            Path::new("/tmp/b-fanout.svg")
        );
        assert_eq!(sibling_path(Path::new("b")), Path::new("b-fanout.svg"));
    }

    #[test]
    fn curve_is_well_formed_with_and_without_points() {
        let empty = Report::new(sample_info(), &sample_run());
        let s = svg(&empty);
        well_formed(&s).unwrap();
        assert!(s.contains("no data"));
        let mut run = sample_run();
        let mut point = run.cases[2].clone();
        point.header.case = Case::FanoutPhys;
        for k in [1u32, 2, 3] {
            point.header.target_count = k;
            run.cases.push(point.clone());
        }
        let r = Report::new(sample_info(), &run);
        assert_eq!(r.fanout.len(), 3);
        let s = svg(&r);
        well_formed(&s).unwrap();
        assert!(s.contains("<polyline") && s.contains("phys"), "{s}");
        assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
    }
}
