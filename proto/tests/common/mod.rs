#![allow(unreachable_pub)]
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Instant;

use jsonlink_proto::testing::{Pair, Peer};
use jsonlink_proto::{Event, Payload, PeerRequestId, RequestId};
use serde_json::value::RawValue;

pub fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

pub fn pair() -> Pair {
    Pair::seeded(Instant::now(), 1)
}

pub fn connected() -> Pair {
    let mut p = pair();
    p.connect();
    p
}

pub fn messages(p: &Peer) -> Vec<String> {
    p.events
        .iter()
        .filter_map(|e| match e {
            Event::Message { body, .. } => Some(body.get().to_owned()),
            _ => None,
        })
        .collect()
}

pub fn requests(p: &Peer) -> Vec<(PeerRequestId, Option<String>, String)> {
    p.events
        .iter()
        .filter_map(|e| match e {
            Event::Request { id, op, body } => {
                Some((*id, op.clone().map(String::from), body.get().to_owned()))
            }
            _ => None,
        })
        .collect()
}

/// Every resolution (response or failure) for our requests, in order.
pub fn resolutions(p: &Peer) -> Vec<(RequestId, Result<Payload, jsonlink_proto::RequestError>)> {
    p.events
        .iter()
        .filter_map(|e| match e {
            Event::Response { id, body } => Some((*id, Ok(body.clone()))),
            Event::RequestFailed { id, error } => Some((*id, Err(error.clone()))),
            _ => None,
        })
        .collect()
}

/// Asserts `Closed` was emitted exactly once and last.
pub fn assert_closed_last(p: &Peer) {
    let n = p
        .events
        .iter()
        .filter(|e| matches!(e, Event::Closed(_)))
        .count();
    assert_eq!(n, 1, "exactly one Closed: {:?}", p.events);
    assert!(
        matches!(p.events.last(), Some(Event::Closed(_))),
        "Closed is last: {:?}",
        p.events
    );
}

/// Records a fault case's observed outcome for the fault table
/// (`tests/faults/expected.md`): written to `$JSONLINK_FAULT_RESULTS/<id>`
/// when that variable is set (scripts/check.sh sets it), else a no-op. A
/// sub-case `F10/local` is written as `F10~local`, as
/// `jsonlink_tests::faults::result_path` names it.
pub fn record(id: &str, outcome: impl std::fmt::Display) {
    if let Some(dir) = std::env::var_os("JSONLINK_FAULT_RESULTS") {
        let dir = std::path::PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(id.replace('/', "~")), outcome.to_string());
    }
}
