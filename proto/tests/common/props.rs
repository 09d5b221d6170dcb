//! What the property tests share: a strategy for either side of a pair,
//! and the ledger of every request issued and every resolution reported,
//! to check that each resolves exactly once.

use std::collections::HashMap;

use jsonlink_proto::testing::{Pair, Who};
use jsonlink_proto::{Event, RequestId};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Either side, as a proptest strategy.
pub fn who() -> impl Strategy<Value = Who> {
    prop_oneof![Just(Who::Client), Just(Who::Server)]
}

/// A request by who sent it (`true`: the client) and its id.
type Key = (bool, u64);

/// Requests issued by either side of a pair and their resolutions.
#[derive(Debug, Default)]
pub struct Ledger {
    issued: HashMap<Key, u32>,
    resolved: HashMap<Key, u32>,
    /// How many of each peer's events (client, server) were tallied.
    tallied: [usize; 2],
}

impl Ledger {
    /// Notes that `by` issued request `id`.
    pub fn issue(&mut self, by: Who, id: RequestId) {
        *self.issued.entry((by == Who::Client, id.0)).or_default() += 1;
    }

    /// How many requests were issued.
    pub fn issued(&self) -> usize {
        self.issued.len()
    }

    /// How many requests resolved.
    pub fn resolved(&self) -> usize {
        self.resolved.len()
    }

    /// Counts the resolutions both peers reported since the last tally;
    /// fails on a request resolved twice.
    pub fn tally(&mut self, p: &Pair) -> Result<(), TestCaseError> {
        for (i, peer) in [&p.client, &p.server].into_iter().enumerate() {
            for e in &peer.events[self.tallied[i]..] {
                if let Event::Response { id, .. } | Event::RequestFailed { id, .. } = e {
                    let n = self.resolved.entry((i == 0, id.0)).or_default();
                    *n += 1;
                    prop_assert_eq!(*n, 1, "request {:?} resolved twice", id);
                }
            }
            self.tallied[i] = peer.events.len();
        }
        Ok(())
    }

    /// Fails unless every request was issued once and resolved exactly
    /// once, and nothing resolved that was not issued.
    pub fn each_resolved_exactly_once(&self) -> Result<(), TestCaseError> {
        for (k, n) in &self.issued {
            prop_assert_eq!(*n, 1, "request {:?} issued twice", k);
            prop_assert_eq!(
                self.resolved.get(k).copied().unwrap_or(0),
                1,
                "request {:?} resolved {:?} times",
                k,
                self.resolved.get(k)
            );
        }
        for k in self.resolved.keys() {
            prop_assert!(
                self.issued.contains_key(k),
                "{:?} resolved, never issued",
                k
            );
        }
        Ok(())
    }
}
