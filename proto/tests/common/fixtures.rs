//! Fixtures: the pairs the tests start from.
#![allow(clippy::disallowed_methods)] // a pair takes one real Instant as the base of virtual time

use std::time::Instant;

use jsonlink_proto::testing::{Pair, client_config, server_config};
use jsonlink_proto::{Config, Policy, Secret};

/// The default pair (seed 1, no channel binding), before its handshake.
pub fn pair() -> Pair {
    Setup::seed(1).pair()
}

/// The default pair after its handshake.
pub fn connected() -> Pair {
    Setup::seed(1).connected()
}

/// The default pair whose server waits for a hello that never comes: the
/// client's was taken off the wire.
pub fn awaiting_hello() -> Pair {
    let mut p = pair();
    p.client.conn.poll_transmit(&mut Vec::new());
    p
}

/// A connected pair (seed 5, both sides seeing one channel binding) that
/// requires `protection` on both sides.
pub fn protected(protection: Protection) -> Pair {
    Setup::seed(5).binding(9).protection(protection).connected()
}

/// How a test pair is built: both sides' configurations (from one seed,
/// then adjusted) and the channel binding each side sees.
#[must_use]
pub struct Setup {
    client: Config,
    server: Config,
    client_binding: Vec<u8>,
    server_binding: Vec<u8>,
}

impl Setup {
    /// `client_config(seed)` and `server_config(seed)`, no channel binding.
    pub fn seed(seed: u8) -> Self {
        Self {
            client: client_config(seed),
            server: server_config(seed),
            client_binding: Vec::new(),
            server_binding: Vec::new(),
        }
    }

    /// Both sides see the same 32-byte channel binding, each byte `byte`.
    pub fn binding(self, byte: u8) -> Self {
        self.bindings(byte, byte)
    }

    /// The sides see different 32-byte channel bindings (as through a relay
    /// that terminates TLS and opens its own).
    pub fn bindings(mut self, client: u8, server: u8) -> Self {
        self.client_binding = vec![client; 32];
        self.server_binding = vec![server; 32];
        self
    }

    /// Both sides require `protection`.
    pub fn protection(mut self, protection: Protection) -> Self {
        protection.require(&mut self.client);
        protection.require(&mut self.server);
        self
    }

    /// The client uses this secret instead of the one both sides share.
    pub fn client_secret(self, secret: &[u8]) -> Self {
        let secret = Secret::from_bytes(secret.to_vec()).unwrap();
        self.client(|c| c.secret = secret)
    }

    /// Adjusts the client's configuration.
    pub fn client(mut self, adjust: impl FnOnce(&mut Config)) -> Self {
        adjust(&mut self.client);
        self
    }

    /// Adjusts the server's configuration.
    pub fn server(mut self, adjust: impl FnOnce(&mut Config)) -> Self {
        adjust(&mut self.server);
        self
    }

    /// Adjusts both configurations alike.
    pub fn both(mut self, adjust: impl Fn(&mut Config)) -> Self {
        adjust(&mut self.client);
        adjust(&mut self.server);
        self
    }

    /// The pair, before its handshake; virtual time starts now.
    pub fn pair(self) -> Pair {
        self.pair_at(Instant::now())
    }

    /// The pair, before its handshake; virtual time starts at `start`.
    pub fn pair_at(self, start: Instant) -> Pair {
        Pair::new(
            start,
            self.client,
            self.server,
            self.client_binding,
            self.server_binding,
        )
    }

    /// The pair recording every byte each side writes (`Peer::log`),
    /// before its handshake.
    pub fn recorded(self) -> Pair {
        let mut p = self.pair();
        p.record();
        p
    }

    /// The pair after its handshake (`Pair::connect`).
    pub fn connected(self) -> Pair {
        let mut p = self.pair();
        p.connect();
        p
    }
}

/// Which protection layers both sides of a pair require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Neither signing nor sealing is required (the test configs' default
    /// policies agree on neither).
    Plain,
    /// Signing required.
    Signed,
    /// Sealing required.
    Sealed,
    /// Signing and sealing required.
    SignedSealed,
}

impl Protection {
    /// The three ways a frame can travel: plain, signed, sealed.
    pub const MODES: [Self; 3] = [Self::Plain, Self::Signed, Self::Sealed];
    /// Every mode that puts a MAC on a frame.
    pub const PROTECTED: [Self; 3] = [Self::Signed, Self::Sealed, Self::SignedSealed];

    /// Whether signing is required.
    pub fn signs(self) -> bool {
        matches!(self, Self::Signed | Self::SignedSealed)
    }

    /// Whether sealing is required.
    pub fn seals(self) -> bool {
        matches!(self, Self::Sealed | Self::SignedSealed)
    }

    /// Requires this protection of `config`; a layer it does not require
    /// keeps the config's own policy.
    pub fn require(self, config: &mut Config) {
        if self.signs() {
            config.signing = Policy::Required;
        }
        if self.seals() {
            config.encryption = Policy::Required;
        }
    }
}
