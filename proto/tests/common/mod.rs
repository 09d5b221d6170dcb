#![allow(unreachable_pub)]
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Instant;

use jsonlink_proto::testing::{Pair, Peer, Who, client_config, server_config};
use jsonlink_proto::{CloseReason, Connection, Event, Payload, PeerRequestId, Policy, RequestId};
use proptest::prop_assert_eq;
use proptest::test_runner::TestCaseError;
use serde_json::value::RawValue;

pub mod vectors;

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

pub fn closed_with(p: &Peer) -> CloseReason {
    assert_closed_last(p);
    p.closed().cloned().unwrap()
}

/// A pair with signing and/or sealing on.
pub fn protected(sign: bool, seal: bool) -> Pair {
    let mut c = client_config(5);
    let mut s = server_config(5);
    if sign {
        c.signing = Policy::Required;
        s.signing = Policy::Required;
    }
    if seal {
        c.encryption = Policy::Required;
        s.encryption = Policy::Required;
    }
    let mut p = Pair::new(Instant::now(), c, s, vec![9; 32], vec![9; 32]);
    p.connect();
    p
}

/// The bytes the client would write for these commands.
pub fn client_wire(p: &mut Pair, f: impl FnOnce(&mut Connection)) -> Vec<u8> {
    f(&mut p.client.conn);
    let mut w = Vec::new();
    p.client.conn.poll_transmit(&mut w);
    w
}

/// The events `p.server` saw and the close code it sent back, after `line`
/// arrived on an authenticated plain link.
pub fn server_refusal(line: &str) -> (Vec<Event>, String) {
    let mut p = connected();
    p.inject(Who::Server, format!("{line}\n").as_bytes());
    let mut w = Vec::new();
    p.server.conn.poll_transmit(&mut w);
    let code = String::from_utf8_lossy(&w)
        .split(r#""code":""#)
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap_or("none")
        .to_owned();
    (p.server.take_events(), code)
}

pub fn count(
    p: &Pair,
    resolved: &mut HashMap<(bool, u64), u32>,
    seen: &mut [usize; 2],
) -> Result<(), TestCaseError> {
    for (i, peer) in [&p.client, &p.server].into_iter().enumerate() {
        for e in &peer.events[seen[i]..] {
            if let Event::Response { id, .. } | Event::RequestFailed { id, .. } = e {
                let n = resolved.entry((i == 0, id.0)).or_default();
                *n += 1;
                prop_assert_eq!(*n, 1, "resolved twice");
            }
        }
        seen[i] = peer.events.len();
    }
    Ok(())
}
