//! The torture's parameters, from the guest command line: scftorture's
//! weights (`scf.weight_single=` ...), their defaulting and the weighted
//! random choice of an operation, plus this kernel's `torture.duration_ms=`
//! and `torture.stat_ms=` (or scftorture's `scf.stat_interval=` seconds).

use shared::cmdline::{NumberError, Param, params, parse_u64};

use crate::kprintln;

/// One kind of operation (scftorture's primitive plus its `wait`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `smp_call_function_single(cpu, .., wait)`.
    Single(bool),
    /// `smp_call_function_single(cpu, .., 0)`, then wait for completion.
    SingleRpc,
    /// `smp_call_function_many(mask, .., wait)`.
    Many(bool),
    /// `smp_call_function(.., wait)`.
    All(bool),
}

/// The operations in scftorture's `scf_sel_add` order, with the key of
/// their weight.
pub const OPS: [(Op, &str); 7] = [
    (Op::Single(false), "scf.weight_single"),
    (Op::SingleRpc, "scf.weight_single_rpc"),
    (Op::Single(true), "scf.weight_single_wait"),
    (Op::Many(false), "scf.weight_many"),
    (Op::Many(true), "scf.weight_many_wait"),
    (Op::All(false), "scf.weight_all"),
    (Op::All(true), "scf.weight_all_wait"),
];

impl Op {
    /// scftorture's name for it (`scf_sel_dump`).
    pub fn name(self) -> &'static str {
        match self {
            Op::Single(false) => "smp_call_function_single(nowait)",
            Op::Single(true) => "smp_call_function_single(wait)",
            Op::SingleRpc => "smp_call_function_single_rpc(wait)",
            Op::Many(false) => "smp_call_function_many(nowait)",
            Op::Many(true) => "smp_call_function_many(wait)",
            Op::All(false) => "smp_call_function(nowait)",
            Op::All(true) => "smp_call_function(wait)",
        }
    }
}

/// Default run time when the command line gives none.
const DEFAULT_DURATION_MS: u64 = 5_000;

/// The parsed configuration.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How long the invokers run.
    pub duration_ms: u64,
    /// Time between statistics lines.
    pub stat_ms: u64,
    /// Weights after scftorture's defaulting, in [`OPS`] order.
    pub weights: [u64; OPS.len()],
    /// Cumulative weights of the non-zero ones, with their op.
    sel: [(u64, Op); OPS.len()],
    nsel: usize,
}

/// A weight: a whole number, -1 (unset) or more; else what is wrong.
fn weight(value: Option<&str>) -> Result<i64, &'static str> {
    let (negative, digits) = match value {
        Some(v) => v.strip_prefix('-').map_or((false, v), |rest| (true, rest)),
        None => (false, ""),
    };
    let n = match parse_u64(Some(digits)) {
        Ok(n) => n,
        Err(NumberError::Missing) => return Err("needs a value (a weight, -1 or more)"),
        Err(NumberError::Invalid) => return Err("is not a number (a weight, -1 or more)"),
        Err(NumberError::Overflow) => return Err("is too large for a weight"),
    };
    let n = i64::try_from(n).map_err(|_| "is too large for a weight")?;
    match (negative, n) {
        (false, n) => Ok(n),
        (true, 0) => Ok(0),
        (true, 1) => Ok(-1),
        (true, _) => Err("is negative; a weight is -1 (unset) or more"),
    }
}

impl Config {
    /// Parses the `scf.` and `torture.` words of `cmdline` (warning about
    /// bad ones on the console), then applies scftorture's weight
    /// defaulting for `nr_cpu_ids` CPUs. `Err` if every weight ends up 0.
    pub fn parse(cmdline: &str, nr_cpu_ids: u32) -> Result<Config, &'static str> {
        let mut raw = [-1i64; OPS.len()];
        let mut duration_ms = DEFAULT_DURATION_MS;
        let mut stat_ms = 0;
        for Param { key, value } in params(cmdline) {
            if let Some(i) = OPS.iter().position(|(_, k)| *k == key) {
                match weight(value) {
                    Ok(w) => raw[i] = w,
                    Err(why) => {
                        kprintln!("scftorture: {key}={}: {why}; ignored", value.unwrap_or(""))
                    }
                }
                continue;
            }
            let n = parse_u64(value);
            match (key, n) {
                ("torture.duration_ms", Ok(ms)) => duration_ms = ms,
                ("torture.stat_ms", Ok(ms)) => stat_ms = ms,
                ("scf.stat_interval", Ok(s)) => stat_ms = s.saturating_mul(1000),
                ("scf.weight_resched", _) => {
                    kprintln!(
                        "scftorture: scf.weight_resched: this kernel has no scheduler; ignored"
                    )
                }
                ("torture.duration_ms" | "torture.stat_ms" | "scf.stat_interval", Err(_)) => {
                    kprintln!("scftorture: {key}: needs a non-negative number; ignored")
                }
                (k, _) if k.starts_with("scf.") || k.starts_with("torture.") => {
                    kprintln!("scftorture: unknown parameter {k}; ignored")
                }
                _ => {}
            }
        }
        if stat_ms == 0 {
            // scftorture prints every 60 s; runs here are seconds long.
            stat_ms = (duration_ms / 4).clamp(250, 60_000);
        }
        let weights = default_weights(raw, nr_cpu_ids);
        let mut cfg = Config {
            duration_ms,
            stat_ms,
            weights,
            sel: [(0, Op::Single(false)); OPS.len()],
            nsel: 0,
        };
        let mut total = 0u64;
        for (i, w) in weights.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            total = total.saturating_add(*w);
            cfg.sel[cfg.nsel] = (total, OPS[i].0);
            cfg.nsel += 1;
        }
        if cfg.nsel == 0 {
            return Err("all zero weights makes no sense");
        }
        Ok(cfg)
    }

    fn total(&self) -> u64 {
        self.sel[self.nsel.saturating_sub(1)].0
    }

    /// scftorture's `scf_sel_rand`: `w = r % (total + 1)`, then the first
    /// entry whose cumulative weight is at least `w`.
    pub fn select(&self, r: u64) -> Op {
        let w = r % (self.total() + 1);
        self.sel[..self.nsel]
            .iter()
            .find(|(cum, _)| *cum >= w)
            .map_or(self.sel[0].1, |(_, op)| *op)
    }

    /// scftorture's `scf_sel_dump`: each op's share in percent.
    pub fn dump(&self) {
        let total = self.total().max(1);
        let mut prev = 0;
        for (cum, op) in &self.sel[..self.nsel] {
            let share = (cum - prev) * 100_000 / total;
            prev = *cum;
            kprintln!(
                "scftorture: {:3}.{:03} {}",
                share / 1000,
                share % 1000,
                op.name()
            );
        }
    }
}

/// scftorture's defaulting: if no weight is positive, the unset (-1) ones
/// get `2 * nr_cpu_ids` for the single calls, 2 for many and 1 for all,
/// and an explicit 0 stays 0; otherwise every unset one becomes 0.
pub fn default_weights(raw: [i64; OPS.len()], nr_cpu_ids: u32) -> [u64; OPS.len()] {
    let any_positive = raw.iter().any(|w| *w > 0);
    let single = 2 * u64::from(nr_cpu_ids.max(1));
    core::array::from_fn(|i| match raw[i] {
        0 => 0,
        w if w > 0 => w as u64,
        _ if any_positive => 0,
        _ => match OPS[i].0 {
            Op::Single(_) | Op::SingleRpc => single,
            Op::Many(_) => 2,
            Op::All(_) => 1,
        },
    })
}
