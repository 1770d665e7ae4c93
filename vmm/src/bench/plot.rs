//! `--plot PATH.svg`: the latency distribution of every case as a
//! cumulative distribution on a logarithmic time axis, one colored line per
//! case, with its median marked, and the host caveat in the title. Written
//! by hand: a few hundred bytes of SVG per line, no dependencies.

use std::fmt::Write as _;

use shared::bench::Status;

use super::report::Report;

const WIDTH: f64 = 960.0;
const PLOT_LEFT: f64 = 70.0;
const PLOT_RIGHT: f64 = 640.0;
const PLOT_TOP: f64 = 92.0;
const PLOT_BOTTOM: f64 = 452.0;
const LEGEND_X: f64 = 660.0;
/// Points drawn per line at most.
const MAX_POINTS: usize = 400;

pub(super) const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f",
];

/// Escapes text for SVG.
pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `v` with about three significant digits.
/// Opens an SVG document of `size` (width, height) on a white ground with
/// its title and, below it, the host and vCPU count, both at `x`.
pub(super) fn header(s: &mut String, size: (f64, f64), x: f64, title: &str, r: &Report) {
    let (w, h) = size;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{x}" y="22" font-size="16" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(
        s,
        r#"<text x="{x}" y="40">{}; {} vCPUs</text>"#,
        esc(&r.host_line()),
        r.info.vcpus,
    );
}

fn sig3(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The label of a grid line at a power of ten `ns`.
pub(super) fn decade_label(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{} ms", (ns / 1e6).round())
    } else if ns >= 1e3 {
        format!("{} µs", (ns / 1e3).round())
    } else {
        format!("{} ns", ns.round())
    }
}

/// A human time label for `ns`.
pub(super) fn label(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{} ms", sig3(ns / 1e6))
    } else if ns >= 1e3 {
        format!("{} µs", sig3(ns / 1e3))
    } else {
        format!("{} ns", sig3(ns))
    }
}

/// Draws the report's latency distributions.
pub fn svg(r: &Report) -> String {
    let rows: Vec<_> = r
        .cases
        .iter()
        .filter(|c| c.status == Status::Ok && !c.sorted_ns.is_empty())
        .collect();
    let legend_h = 40.0 + 18.0 * rows.len() as f64;
    let height = (PLOT_BOTTOM + 60.0).max(PLOT_TOP + legend_h);
    let mut s = String::new();
    header(
        &mut s,
        (WIDTH, height),
        PLOT_LEFT,
        "smpcall IPI benchmark: latency per operation (cumulative)",
        r,
    );
    let _ = writeln!(
        s,
        r#"<text x="{PLOT_LEFT}" y="56" font-size="11">{}</text>"#,
        esc(&r.pinning_line())
    );
    if r.emulation_note().is_some() {
        let _ = writeln!(
            s,
            r##"<text x="{PLOT_LEFT}" y="74" fill="#b00000">Guest instructions are emulated on this host: times reflect instruction counts, not bare-metal KVM.</text>"##
        );
    }
    let lo = rows
        .iter()
        .filter_map(|c| c.sorted_ns.iter().copied().find(|&v| v > 0.0))
        .fold(f64::INFINITY, f64::min);
    let hi = rows
        .iter()
        .filter_map(|c| c.sorted_ns.last().copied())
        .fold(0.0, f64::max);
    if rows.is_empty() || !lo.is_finite() || hi <= 0.0 {
        let _ = writeln!(
            s,
            r#"<text x="{PLOT_LEFT}" y="120">no measured case</text>"#
        );
        s.push_str("</svg>\n");
        return s;
    }
    let (d0, d1) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    // Grid positions; data below `lo` (only a zero can be) sits at `lo`.
    let xg = |ns: f64| PLOT_LEFT + (ns.log10() - d0) / (d1 - d0) * (PLOT_RIGHT - PLOT_LEFT);
    let x = |ns: f64| xg(ns.max(lo));
    let y = |frac: f64| PLOT_BOTTOM - frac * (PLOT_BOTTOM - PLOT_TOP);
    // Axes and grid.
    let _ = writeln!(
        s,
        r##"<rect x="{PLOT_LEFT}" y="{PLOT_TOP}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        PLOT_RIGHT - PLOT_LEFT,
        PLOT_BOTTOM - PLOT_TOP
    );
    let mut decade = d0;
    while decade <= d1 + 1e-9 {
        let v = 10f64.powf(decade);
        let gx = xg(v);
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{PLOT_TOP}" x2="{gx:.1}" y2="{PLOT_BOTTOM}" stroke="#ddd"/><text x="{gx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            PLOT_BOTTOM + 16.0,
            esc(&decade_label(v))
        );
        decade += 1.0;
    }
    // The top of the frame is 1; a label there would sit on top of 0.99.
    for q in [0.0, 0.25, 0.5, 0.75, 0.9, 0.99] {
        let gy = y(q);
        let _ = writeln!(
            s,
            r##"<line x1="{PLOT_LEFT}" y1="{gy:.1}" x2="{PLOT_RIGHT}" y2="{gy:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            PLOT_LEFT - 6.0,
            gy + 4.0,
            q
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time per operation (log scale)</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        PLOT_BOTTOM + 36.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" transform="rotate(-90 18 {})" text-anchor="middle">fraction of operations</text>"#,
        (PLOT_TOP + PLOT_BOTTOM) / 2.0,
        (PLOT_TOP + PLOT_BOTTOM) / 2.0
    );
    // One step line per case, its median as a dot, and a legend entry.
    let _ = writeln!(
        s,
        r#"<text x="{LEGEND_X}" y="{}" font-weight="bold">case: p50 / p99</text>"#,
        PLOT_TOP + 4.0
    );
    for (i, c) in rows.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let n = c.sorted_ns.len();
        let step = n.div_ceil(MAX_POINTS).max(1);
        let mut pts = String::new();
        let mut k = 0;
        while k < n {
            let _ = write!(
                pts,
                "{:.1},{:.1} ",
                x(c.sorted_ns[k]),
                y((k + 1) as f64 / n as f64)
            );
            k += step;
        }
        let _ = write!(pts, "{:.1},{:.1}", x(c.sorted_ns[n - 1]), y(1.0));
        let _ = writeln!(
            s,
            r#"<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>"#
        );
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/>"#,
            x(c.ns.p50),
            y(0.5)
        );
        let ly = PLOT_TOP + 24.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{LEGEND_X}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="{color}" stroke-width="3"/><text x="{}" y="{:.1}">{}: {} / {}</text>"#,
            ly - 4.0,
            LEGEND_X + 22.0,
            ly - 4.0,
            LEGEND_X + 28.0,
            ly,
            esc(c.case.name()),
            esc(&label(c.ns.p50.round())),
            esc(&label(c.ns.p99.round()))
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::bench::report::tests::{sample_info, sample_run};

    /// Checks that tags nest and close, attributes are quoted, and no bare
    /// `&` or `<` appears in text: enough to catch what a hand-written SVG
    /// gets wrong.
    pub(in crate::bench) fn well_formed(s: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            if let Some(a) = text.find('&') {
                let ent = &text[a..];
                if !["&amp;", "&lt;", "&gt;", "&quot;"]
                    .iter()
                    .any(|e| ent.starts_with(e))
                {
                    return Err(format!("bare & in {text:?}"));
                }
            }
            let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            if tag.contains('<') {
                return Err(format!("< inside tag {tag:?}"));
            }
            if !tag.matches('"').count().is_multiple_of(2) {
                return Err(format!("unbalanced quotes in {tag:?}"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop().as_deref() != Some(name) {
                    return Err(format!("</{name}> closes nothing open"));
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
            }
            rest = &rest[close + 1..];
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed {stack:?}"))
        }
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(label(41_051.0), "41.1 µs");
        assert_eq!(label(4_248_750.0), "4.25 ms");
        assert_eq!(label(1e4), "10.0 µs");
        assert_eq!(label(512.0), "512 ns");
        assert_eq!(decade_label(1e4), "10 µs");
        assert_eq!(decade_label(1e7), "10 ms");
    }

    #[test]
    fn checker_catches_mistakes() {
        assert!(well_formed("<svg><g></g></svg>").is_ok());
        assert!(well_formed("<svg><g></svg>").is_err());
        assert!(well_formed("<svg>a & b</svg>").is_err());
        assert!(well_formed(r#"<svg x="1></svg>"#).is_err());
    }

    #[test]
    fn svg_is_well_formed_and_names_every_case() {
        let r = Report::new(sample_info(), &sample_run());
        let s = svg(&r);
        well_formed(&s).unwrap();
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("single-wait"));
        assert!(s.contains("Test CPU &lt;&amp;&gt;"), "host text escaped");
        assert!(s.contains("<polyline"));
        let mut empty = sample_run();
        empty.cases.clear();
        well_formed(&svg(&Report::new(sample_info(), &empty))).unwrap();
    }
}
