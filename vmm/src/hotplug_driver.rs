//! The host's driver of the guest's CPU hotplug: a schedule (`--hotplug
//! "100ms:off 3; 250ms:on 3"`) or random churn (`--hotplug-churn MS`),
//! carried out through the request mailbox while the guest runs.

use std::time::{Duration, Instant};

use shared::mailbox::{Op, result};

use crate::config::VmConfig;
use crate::mailbox::{Channel, RequestError};

/// How long one hotplug request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Online or offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Bring the CPU up.
    Online,
    /// Take the CPU down.
    Offline,
}

impl Change {
    /// The mailbox request for it.
    pub fn op(self) -> Op {
        match self {
            Change::Online => Op::Online,
            Change::Offline => Op::Offline,
        }
    }

    /// "online" / "offline".
    pub fn name(self) -> &'static str {
        match self {
            Change::Online => "online",
            Change::Offline => "offline",
        }
    }
}

/// What the guest's refusal `res` (a negative errno from
/// [`shared::mailbox::result`]) of `change` for `cpu` means.
pub fn errno_text(res: i32, cpu: u32, change: Change) -> String {
    match res {
        result::EALREADY => format!("CPU {cpu} is already {}", change.name()),
        result::EBUSY => format!("CPU {cpu} is the last online CPU"),
        result::EINVAL if cpu == 0 => "CPU 0 (the boot CPU) cannot go offline".into(),
        result::EINVAL => format!(
            "CPU {cpu} cannot be brought {} (not possible)",
            change.name()
        ),
        result::EIO => format!("CPU {cpu} did not go {} in time", change.name()),
        other => format!("the guest answered {other}"),
    }
}

/// One scheduled change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// When, from the start of the run.
    pub at: Duration,
    /// What.
    pub change: Change,
    /// Which CPU.
    pub cpu: u32,
}

/// What happened to one change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When it was made, from the start of the run.
    pub at: Duration,
    /// What.
    pub change: Change,
    /// Which CPU.
    pub cpu: u32,
    /// The guest's answer (0 or a negative errno), or why there was none.
    pub result: Result<i32, RequestError>,
}

impl Event {
    /// Whether the guest did it.
    pub fn ok(&self) -> bool {
        self.result == Ok(result::OK)
    }
}

/// Latest time a step may have: a day, as `--timeout`.
pub const SCHEDULE_MAX: Duration = Duration::from_secs(86_400);

/// A step's TIME: a whole number with its unit, `ms` or `s` (`250ms`,
/// `2s`); no sign, no fraction, no bare number.
fn parse_time(s: &str) -> Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else {
        return Err(format!("time {s:?} needs a unit: ms or s (e.g. {s}ms)"));
    };
    if num.contains('.') {
        return Err(format!(
            "time {s:?}: whole numbers only (write 1500ms, not 1.5s)"
        ));
    }
    let ms = whole(num)
        .and_then(|v| v.checked_mul(scale))
        .ok_or_else(|| format!("time {s:?} is not a whole number of ms or s"))?;
    let at = Duration::from_millis(ms);
    if at > SCHEDULE_MAX {
        return Err(format!(
            "time {s:?} is later than {}s",
            SCHEDULE_MAX.as_secs()
        ));
    }
    Ok(at)
}

/// Decimal digits only (`u64::from_str` would take a `+`).
fn whole(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a schedule: steps `TIME:ACTION CPU` separated by `;` (blanks
/// around the parts are ignored, an empty step too). TIME is from the
/// start, a whole number with its unit (`100ms`, `2s`); ACTION is `off`
/// (`offline`) or `on` (`online`); CPU is 1 to `cpus - 1` (CPU 0, the boot
/// CPU, never goes offline).
pub fn parse_schedule(spec: &str, cpus: u32) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (time, action) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?}: expected TIME:off CPU or TIME:on CPU"))?;
        let at = parse_time(time.trim()).map_err(|e| format!("{part:?}: bad {e}"))?;
        let mut words = action.split_whitespace();
        let change = match words.next() {
            Some("off" | "offline") => Change::Offline,
            Some("on" | "online") => Change::Online,
            _ => return Err(format!("{part:?}: the action is 'off' or 'on'")),
        };
        let cpu = words
            .next()
            .and_then(whole)
            .and_then(|c| u32::try_from(c).ok())
            .ok_or_else(|| format!("{part:?}: expected a CPU number"))?;
        if words.next().is_some() {
            return Err(format!("{part:?}: unexpected words after the CPU"));
        }
        if cpu == 0 {
            return Err(format!(
                "{part:?}: CPU 0 (the boot CPU) is always online; the CPU is 1 to {}",
                cpus.saturating_sub(1)
            ));
        }
        if cpu >= cpus {
            return Err(format!(
                "{part:?}: CPU {cpu} does not exist (--cpus {cpus})"
            ));
        }
        steps.push(Step { at, change, cpu });
    }
    if steps.is_empty() {
        return Err("empty schedule".into());
    }
    steps.sort_by_key(|s| s.at);
    Ok(steps)
}

/// Carries out `config`'s hotplug schedule from `start`, then its churn.
/// A guest running `wait` is asked to finish: after the schedule without
/// churn; at `config.duration` (or after the schedule, if later) with it,
/// the churn stopping then. Stops early when `stopped()`.
pub fn drive(
    channel: &Channel,
    config: &VmConfig,
    start: Instant,
    stopped: &dyn Fn() -> bool,
) -> Vec<Event> {
    let wait = config.scenario == shared::Scenario::Wait;
    let end = config.duration.filter(|_| wait).map(|d| start + d);
    let mut events = run_schedule(channel, &config.hotplug, start, stopped);
    if let Some(period) = config.hotplug_churn {
        events.extend(churn(channel, config.cpus, period, start, end, stopped));
    }
    if wait && (config.hotplug_churn.is_none() || end.is_some()) {
        if let Some(end) = end {
            while !stopped() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5).min(end - Instant::now()));
            }
        }
        if !stopped() {
            let _ = channel.request(Op::Finish, 0, REQUEST_TIMEOUT);
        }
    }
    events
}

/// Carries out `steps` from `start`, stopping early when `stopped()`.
pub fn run_schedule(
    channel: &Channel,
    steps: &[Step],
    start: Instant,
    stopped: &dyn Fn() -> bool,
) -> Vec<Event> {
    let mut events = Vec::new();
    for step in steps {
        while start.elapsed() < step.at {
            if stopped() {
                return events;
            }
            std::thread::sleep((step.at - start.elapsed()).min(Duration::from_millis(5)));
        }
        let at = start.elapsed();
        let result = channel
            .request(step.change.op(), step.cpu, REQUEST_TIMEOUT)
            .map(|r| r.result);
        log::info!(
            "hotplug: {} CPU {}: {:?}",
            step.change.name(),
            step.cpu,
            result
        );
        let stop = result == Err(RequestError::Stopped);
        events.push(Event {
            at,
            change: step.change,
            cpu: step.cpu,
            result,
        });
        if stop {
            break;
        }
    }
    events
}

/// Every `period`, toggles a random CPU other than 0 (offline if it is
/// online, else online), until `stopped()` or `until`.
pub fn churn(
    channel: &Channel,
    cpus: u32,
    period: Duration,
    start: Instant,
    until: Option<Instant>,
    stopped: &dyn Fn() -> bool,
) -> Vec<Event> {
    let mut events = Vec::new();
    if cpus < 2 {
        return events;
    }
    let mut online = vec![true; cpus as usize];
    let mut rng = 0x2545_f491_4f6c_dd1du64 ^ start.elapsed().as_nanos() as u64;
    let mut next = start + period;
    while !stopped() && until.is_none_or(|u| Instant::now() < u) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(2).min(next - Instant::now()));
            continue;
        }
        next += period;
        let cpu = 1 + (shared::xorshift64(&mut rng) % u64::from(cpus - 1)) as u32;
        let change = if online[cpu as usize] {
            Change::Offline
        } else {
            Change::Online
        };
        let at = start.elapsed();
        let result = channel
            .request(change.op(), cpu, REQUEST_TIMEOUT)
            .map(|r| r.result);
        log::info!("hotplug churn: {} CPU {cpu}: {result:?}", change.name());
        match result {
            Ok(result::OK) | Ok(result::EALREADY) => {
                online[cpu as usize] = change == Change::Online
            }
            Err(RequestError::Stopped) => break,
            _ => {}
        }
        events.push(Event {
            at,
            change,
            cpu,
            result,
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let s = parse_schedule("250ms:on 3; 100ms:off 3; 1s:off 2", 4).unwrap();
        assert_eq!(
            s,
            [
                Step {
                    at: Duration::from_millis(100),
                    change: Change::Offline,
                    cpu: 3
                },
                Step {
                    at: Duration::from_millis(250),
                    change: Change::Online,
                    cpu: 3
                },
                Step {
                    at: Duration::from_secs(1),
                    change: Change::Offline,
                    cpu: 2
                },
            ]
        );
        assert_eq!(
            parse_schedule(" 2s : on 1 ;; 0ms:offline 3;", 4).unwrap(),
            [
                Step {
                    at: Duration::ZERO,
                    change: Change::Offline,
                    cpu: 3
                },
                Step {
                    at: Duration::from_secs(2),
                    change: Change::Online,
                    cpu: 1
                },
            ]
        );
        for (bad, why) in [
            ("", "empty schedule"),
            ("100ms", "expected TIME"),
            ("x:off 1", "needs a unit"),
            ("xs:off 1", "not a whole number"),
            ("100:off 3", "needs a unit"),
            ("1.5s:off 3", "whole numbers only"),
            ("+5ms:off 3", "not a whole number"),
            ("-5ms:off 3", "not a whole number"),
            ("100 ms:off 3", "not a whole number"),
            ("86401s:off 3", "later than 86400s"),
            ("99999999999999999999s:off 3", "not a whole number"),
            ("10ms:up 1", "'off' or 'on'"),
            ("10ms:off", "expected a CPU number"),
            ("10ms:off +1", "expected a CPU number"),
            ("10ms:off -1", "expected a CPU number"),
            ("10ms:off 9", "CPU 9 does not exist"),
            ("10ms:off 4", "CPU 4 does not exist"),
            ("100ms:off 0", "CPU 0 (the boot CPU) is always online"),
            ("100ms:on 0", "CPU 0 (the boot CPU) is always online"),
            ("10ms:off 1 2", "unexpected words"),
        ] {
            let e = parse_schedule(bad, 4).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e:?} lacks {why:?}");
        }
    }
}
