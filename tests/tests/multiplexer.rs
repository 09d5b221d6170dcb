//! The Multiplexer over real TLS on 127.0.0.1: two client entries and two
//! server entries exchanging messages and requests in every direction (on
//! each runtime), a peer restarted mid-run and reached again by its
//! identity, a connection list loaded from a file, entries added and
//! removed while traffic flows, and fault case X5 (an entry down from the
//! start, one that flaps).
//!
//! Every wait is on an event (the merged stream's, a peer's) or on a
//! status with no event of its own (`eventually`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonlink_rt::{
    ClientEntry, ConnectionList, Defaults, EntryState, Error, Event, Identity, Link, LinkState,
    Multiplexer, MuxEvent, MuxLinkId, Reconnect, Role, Runtime, Server, ServerEntry, To,
};
use jsonlink_tests::faults::record;
use jsonlink_tests::fixtures::{Fixture, bind, connect, localhost, ms};
use jsonlink_tests::runtimes::{Gauges, on_each_runtime, on_tokio};
use jsonlink_tests::waits::{EXPECT_WITHIN, authenticated, eventually, rebind, within};
use serde_json::{Value, json};

fn mux_identity() -> Identity {
    Identity::new("mux-1", "hub")
}

/// The list's defaults from the fixture: identity, secret, both TLS
/// configurations, a quick reconnect.
fn defaults(fx: &Fixture) -> Defaults {
    Defaults::new()
        .identity(mux_identity())
        .secret(fx.secret.clone())
        .client_tls(fx.client_tls())
        .server_tls(fx.server_tls())
        .reconnect(Reconnect::Backoff {
            base: ms(20),
            cap: ms(200),
        })
}

/// The mux's handlers: `whoami` answers the entry and the Multiplexer's
/// link id the request came on; `note` messages are reported to `notes`.
fn mux_handlers(mux: &Multiplexer) -> async_channel::Receiver<(String, MuxLinkId, Value)> {
    let (tx, rx) = async_channel::unbounded();
    mux.handlers()
        .handle_request("whoami", |link: Link, _: Value| async move {
            Ok(json!({
                "entry": link.entry(),
                "mux_id": link.mux_id().map(|m| m.0),
                "server_link_id": link.id(),
            }))
        });
    mux.handlers()
        .handle_message("note", move |link: Link, v: Value| {
            let _ = tx.try_send((
                link.entry().unwrap_or("?").to_owned(),
                link.mux_id().expect("a mux link"),
                v,
            ));
            async {}
        });
    rx
}

/// A peer's handlers: `echo` answers its arguments with the peer's name;
/// `note` messages are reported to the returned channel.
fn peer_handlers(
    handlers: &jsonlink_rt::Handlers,
    name: &'static str,
) -> async_channel::Receiver<Value> {
    let (tx, rx) = async_channel::unbounded();
    handlers.handle_request("echo", move |_link, v: Value| async move {
        Ok(json!({"peer": name, "args": v}))
    });
    handlers.handle_message("note", move |_link, v: Value| {
        let _ = tx.try_send(v);
        async {}
    });
    rx
}

/// Waits for `Authenticated` events of the merged stream until every entry
/// of `entries` has one; their links' ids by entry.
async fn until_authenticated(mux: &Multiplexer, entries: &[&str]) -> Vec<(String, MuxLinkId)> {
    let mut want: BTreeSet<&str> = entries.iter().copied().collect();
    let mut seen = Vec::new();
    while !want.is_empty() {
        let ev = within(EXPECT_WITHIN, mux.next_event())
            .await
            .unwrap_or_else(|| panic!("no Authenticated for {want:?}"))
            .expect("stream open");
        if let MuxEvent {
            entry,
            link: Some(id),
            event: Event::Authenticated { link, .. },
            ..
        } = ev
        {
            assert_eq!(
                link.entry(),
                Some(&*entry),
                "the event's link names its entry"
            );
            assert_eq!(link.mux_id(), Some(id));
            want.remove(&*entry);
            seen.push((entry.to_string(), id));
        }
    }
    seen
}

async fn next_note<T>(rx: &async_channel::Receiver<T>) -> T {
    within(EXPECT_WITHIN, rx.recv())
        .await
        .expect("a note in time")
        .expect("channel open")
}

/// Two client entries (to peers `up-a`, `up-b`), two server entries (with
/// clients `edge-a`, `edge-b`): requests and messages from the mux to each
/// entry and identity, and from each peer to the mux; ids unique across
/// entries while every server counts from 1.
async fn every_direction(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt.clone());
    let up_a = bind(fx.server_as(Identity::new("pa", "upstream"))).await;
    let up_b = bind(fx.server_as(Identity::new("pb", "upstream"))).await;
    let up_a_notes = peer_handlers(up_a.handlers(), "pa");
    let up_b_notes = peer_handlers(up_b.handlers(), "pb");

    let list = ConnectionList::new(defaults(&fx))
        .client("up-a", ClientEntry::new(up_a.local_addr()))
        .client("up-b", ClientEntry::new(up_b.local_addr()))
        .server("in-a", ServerEntry::new(localhost()))
        .server("in-b", ServerEntry::new(localhost()).max_connections(8));
    let mux = Multiplexer::builder(rt.clone(), list)
        .start()
        .await
        .expect("mux starts");
    let mux_notes = mux_handlers(&mux);
    let addr = |name: &str| {
        mux.entry_status(name)
            .and_then(|s| s.local_addr)
            .expect("a server entry's address")
    };
    let edge_a = connect(fx.client_as(addr("in-a"), Identity::new("ea", "edge"))).await;
    let edge_b = connect(fx.client_as(addr("in-b"), Identity::new("eb", "edge"))).await;
    let edge_a_notes = peer_handlers(edge_a.handlers(), "ea");
    let edge_b_notes = peer_handlers(edge_b.handlers(), "eb");
    let ids = until_authenticated(&mux, &["up-a", "up-b", "in-a", "in-b"]).await;
    let unique: BTreeSet<MuxLinkId> = ids.iter().map(|(_, id)| *id).collect();
    assert_eq!(unique.len(), 4, "one id per link, none shared: {ids:?}");

    // Mux → each entry, by name: requests and messages.
    for (entry, peer) in [
        ("up-a", "pa"),
        ("up-b", "pb"),
        ("in-a", "ea"),
        ("in-b", "eb"),
    ] {
        let answer: Value = mux
            .call(To::Entry(entry), "echo", &json!({"to": entry}))
            .await
            .unwrap_or_else(|e| panic!("request to {entry}: {e}"));
        assert_eq!(answer, json!({"peer": peer, "args": {"to": entry}}));
        assert_eq!(
            mux.send_op(To::Entry(entry), "note", &json!({"to": entry}))
                .await
                .expect("sent"),
            1
        );
    }
    for (notes, entry) in [
        (&up_a_notes, "up-a"),
        (&up_b_notes, "up-b"),
        (&edge_a_notes, "in-a"),
        (&edge_b_notes, "in-b"),
    ] {
        assert_eq!(next_note(notes).await, json!({"to": entry}));
    }

    // Mux → a peer identity, and → a link by the mux's id.
    let ea = Identity::new("ea", "edge");
    let answer: Value = mux
        .call(To::Peer(&ea), "echo", &1)
        .await
        .expect("by identity");
    assert_eq!(answer["peer"], "ea");
    let (_, up_b_id) = ids.iter().find(|(e, _)| e == "up-b").expect("up-b");
    let answer: Value = mux
        .call(To::Link(*up_b_id), "echo", &2)
        .await
        .expect("by id");
    assert_eq!(answer["peer"], "pb");

    // Peers → mux: each peer's request says which entry and link it came on.
    let a_link = up_a.links().pop().expect("the mux's link to up-a");
    let who: Value = up_a
        .request(a_link.id(), &json!({"op": "whoami"}))
        .await
        .expect("whoami");
    assert_eq!(who["entry"], "up-a");
    let who_b: Value = up_b
        .request(
            up_b.links().pop().expect("link").id(),
            &json!({"op": "whoami"}),
        )
        .await
        .expect("whoami");
    assert_eq!(who_b["entry"], "up-b");
    // Every server counts from 1: both upstream servers gave id 1.
    assert_eq!(
        (
            who["server_link_id"].as_u64(),
            who_b["server_link_id"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_ne!(who["mux_id"], who_b["mux_id"], "the mux's ids differ");
    for (client, entry) in [(&edge_a, "in-a"), (&edge_b, "in-b")] {
        let who: Value = client.call("whoami", &()).await.expect("whoami");
        assert_eq!(who["entry"], entry);
        client
            .send_op("note", &json!({"from": entry}))
            .await
            .expect("note");
        let (from_entry, _, body) = next_note(&mux_notes).await;
        assert_eq!((from_entry.as_str(), body), (entry, json!({"from": entry})));
    }
    up_a.broadcast(&json!({"op": "note", "from": "pa"}))
        .expect("broadcast");
    let (from_entry, id, _) = next_note(&mux_notes).await;
    assert_eq!(from_entry, "up-a");
    assert_eq!(
        Some(&id),
        ids.iter().find(|(e, _)| e == "up-a").map(|(_, id)| id)
    );

    // Broadcast from the mux reaches all four.
    assert_eq!(
        mux.broadcast(&json!({"op": "note", "all": true}))
            .expect("broadcast"),
        4
    );
    for notes in [&up_a_notes, &up_b_notes, &edge_a_notes, &edge_b_notes] {
        assert_eq!(next_note(notes).await, json!({"all": true}));
    }

    // Status: per entry and per link.
    let status = mux.status();
    assert_eq!(status.len(), 4);
    for s in &status {
        let want_role = if s.name.starts_with("up") {
            Role::Client
        } else {
            Role::Server
        };
        assert_eq!(s.role, want_role);
        assert_eq!(s.links.len(), 1, "{s:?}");
        let l = &s.links[0];
        assert_eq!(l.state, LinkState::Authenticated);
        assert!(
            l.stats.requests_out >= 1 && l.stats.messages_out >= 2,
            "{l:?}"
        );
        assert!(l.peer.is_some());
    }
    assert!(
        status
            .iter()
            .filter(|s| s.role == Role::Client)
            .all(|s| s.state == EntryState::Authenticated)
    );
    assert_eq!(
        mux.call::<Value, _>(To::Entry("nope"), "echo", &())
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Err(Error::UnknownEntry("nope".into()).to_string())
    );

    edge_a.close().await;
    edge_b.close().await;
    mux.shutdown(Instant::now() + Duration::from_secs(2)).await;
    for s in mux.status() {
        assert!(
            s.links.iter().all(|l| l.state == LinkState::Closed),
            "{s:?}"
        );
    }
    up_a.shutdown(Instant::now()).await;
    up_b.shutdown(Instant::now()).await;
}

#[test]
fn two_client_and_two_server_entries_exchange_messages_and_requests_in_every_direction() {
    on_each_runtime(every_direction);
}
