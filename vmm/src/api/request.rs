//! What a request line asks, and the answer lines. Parsing is strict: one
//! request per line, no unknown or repeated keys, so that a client never
//! gets an answer to a different question than it meant to ask.

use serde::Deserialize;
use serde_json::{Value, json};
use shared::mailbox::result;

use crate::hotplug_driver::{Change, errno_text};
use crate::mailbox::{Reply, RequestError};

/// One request of the control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `{"stats":true}`.
    Stats,
    /// `{"exit":true}`.
    Exit,
    /// `{"cpu":N,"state":"online"|"offline"}`.
    Hotplug {
        /// The CPU, below the VM's count.
        cpu: u32,
        /// What to do with it.
        change: Change,
    },
}

/// Every key a request may have. The derive refuses a key given twice
/// (`duplicate field`) and `deny_unknown_fields` any other key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    cpu: Option<u64>,
    state: Option<String>,
    stats: Option<bool>,
    exit: Option<bool>,
}

const USAGE: &str =
    "expected {\"cpu\":N,\"state\":\"online\"|\"offline\"}, {\"stats\":true} or {\"exit\":true}";

/// Parses one request line for a VM with `cpus` CPUs. `Err` says what is
/// wrong with it. Never panics (the line is untrusted).
pub fn parse_request(line: &str, cpus: u32) -> Result<Request, String> {
    let line = line.trim();
    if line.is_empty() {
        return Err(format!("empty request; {USAGE}"));
    }
    let malformed = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => format!("bad request: {e}"),
        _ => format!("malformed JSON: {e}"),
    };
    // A derived struct also accepts a JSON array of its fields: refuse
    // anything but an object before serde sees it.
    if !line.starts_with('{') {
        serde_json::from_str::<serde::de::IgnoredAny>(line).map_err(malformed)?;
        return Err(format!("a request is a JSON object; {USAGE}"));
    }
    let fields: Fields = serde_json::from_str(line).map_err(malformed)?;
    let hotplug = fields.cpu.is_some() || fields.state.is_some();
    let asked: Vec<&str> = [
        (fields.stats.is_some(), "stats"),
        (fields.exit.is_some(), "exit"),
        (hotplug, "cpu/state"),
    ]
    .into_iter()
    .filter_map(|(given, name)| given.then_some(name))
    .collect();
    if asked.len() > 1 {
        return Err(format!(
            "ambiguous request: it combines {}; send one request per line",
            asked.join(" and ")
        ));
    }
    match fields {
        Fields {
            stats: Some(true), ..
        } => Ok(Request::Stats),
        Fields {
            exit: Some(true), ..
        } => Ok(Request::Exit),
        Fields { stats: Some(_), .. } => Err("\"stats\" must be true".into()),
        Fields { exit: Some(_), .. } => Err("\"exit\" must be true".into()),
        Fields {
            cpu: Some(cpu),
            state: Some(state),
            ..
        } => {
            let change = match state.as_str() {
                "online" => Change::Online,
                "offline" => Change::Offline,
                _ => return Err("\"state\" must be \"online\" or \"offline\"".into()),
            };
            match u32::try_from(cpu) {
                Ok(cpu) if cpu < cpus => Ok(Request::Hotplug { cpu, change }),
                _ => Err(format!("CPU {cpu} does not exist (the VM has {cpus})")),
            }
        }
        Fields { cpu: None, .. } if hotplug => Err("\"state\" needs a \"cpu\"".into()),
        Fields { state: None, .. } if hotplug => {
            Err("\"cpu\" needs a \"state\" (\"online\" or \"offline\")".into())
        }
        _ => Err(USAGE.into()),
    }
}

/// `{"ok":false,"error":why}`.
pub fn refusal(why: &str) -> Value {
    json!({"ok": false, "error": why})
}

/// The answer to `{"stats":true}`.
pub fn stats_answer(reply: Result<Reply, RequestError>) -> Value {
    match reply {
        Ok(reply) => {
            let cpus: Vec<Value> = reply
                .stats
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    json!({"cpu": i, "online": s.online == 1, "ipi_sent": s.ipi_sent,
                           "ipi_received": s.ipi_received, "callbacks_run": s.callbacks_run,
                           "calls_queued": s.calls_queued})
                })
                .collect();
            json!({"ok": true, "cpus": cpus})
        }
        Err(e) => refusal(&e.to_string()),
    }
}

/// The answer to `{"exit":true}`.
pub fn exit_answer(reply: Result<Reply, RequestError>) -> Value {
    match reply {
        Ok(_) => json!({"ok": true, "exit": true}),
        Err(e) => refusal(&e.to_string()),
    }
}

/// The answer to a hotplug request.
pub fn hotplug_answer(cpu: u32, change: Change, reply: Result<Reply, RequestError>) -> Value {
    match reply {
        Ok(r) if r.result == result::OK => json!({"ok": true, "cpu": cpu, "state": change.name()}),
        Ok(r) => json!({"ok": false, "cpu": cpu, "error": errno_text(r.result, cpu, change)}),
        Err(e) => json!({"ok": false, "cpu": cpu, "error": e.to_string()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(line: &str, why: &str) {
        match parse_request(line, 4) {
            Err(e) => assert!(e.contains(why), "{line:?}: {e:?} lacks {why:?}"),
            Ok(r) => panic!("{line:?} was taken as {r:?}"),
        }
    }

    #[test]
    fn good_requests_parse() {
        assert_eq!(parse_request(r#"{"stats":true}"#, 4), Ok(Request::Stats));
        assert_eq!(parse_request(" {\"exit\":true}\r", 4), Ok(Request::Exit));
        assert_eq!(
            parse_request(r#"{"state":"offline","cpu":3}"#, 4),
            Ok(Request::Hotplug {
                cpu: 3,
                change: Change::Offline
            })
        );
    }

    #[test]
    fn empty_and_non_object_lines_are_refused() {
        refused("", "empty request");
        refused(" \t\r", "empty request");
        refused("[3,\"offline\",null,null]", "JSON object");
        refused("3", "JSON object");
        refused("not json", "malformed JSON");
        refused("{\"stats\":true", "malformed JSON");
        refused("{\"stats\":true} {}", "malformed JSON");
        refused("{}", "expected");
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        refused(r#"{"exit":true,"stats":true}"#, "combines stats and exit");
        refused(
            r#"{"stats":true,"cpu":1,"state":"offline"}"#,
            "combines stats and cpu/state",
        );
        refused(r#"{"exit":false,"cpu":1}"#, "ambiguous");
    }

    #[test]
    fn duplicate_and_unknown_keys_are_refused() {
        refused(
            r#"{"cpu":1,"cpu":2,"state":"offline"}"#,
            "duplicate field `cpu`",
        );
        refused(r#"{"stats":true,"stats":true}"#, "duplicate field `stats`");
        refused(r#"{"stats":true,"verbose":1}"#, "unknown field `verbose`");
    }

    #[test]
    fn bad_values_are_refused() {
        refused(r#"{"stats":false}"#, "must be true");
        refused(r#"{"exit":1}"#, "bad request");
        refused(r#"{"cpu":1,"state":"sideways"}"#, "\"state\" must be");
        refused(r#"{"cpu":4,"state":"online"}"#, "CPU 4 does not exist");
        refused(
            r#"{"cpu":18446744073709551615,"state":"online"}"#,
            "does not exist",
        );
        refused(r#"{"cpu":-1,"state":"online"}"#, "bad request");
        refused(r#"{"cpu":1}"#, "needs a \"state\"");
        refused(r#"{"state":"online"}"#, "needs a \"cpu\"");
    }
}
