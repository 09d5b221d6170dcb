//! The handshake (PROTOCOL.md §7–§9): `hello`, `challenge`, `auth` and
//! `ok`, the negotiation of versions, signing, sealing and extensions, the
//! proofs, and the session keys that protect the frames after it.

use std::time::Instant;

use rand_core::Rng as _;

use super::protection::Protection;
use super::timers::{Timer, deadline_after};
use super::{
    Connection, Handled, MAX_EXTENSIONS, MAX_SIGN_ALGS, SEAL_ALG, SUPPORTED_VERSIONS, Side, State,
};
use crate::Secret;
use crate::config::{Extension, Extensions, Identity, Policy, SignAlg};
use crate::crypto::{self, FrameMac, NONCE_LEN, Sealer, SessionKeys, TAG_LEN};
use crate::error::ProtocolError;
use crate::event::{Authenticated, Event};
use crate::wire::encode::RELAY_EXTENSION;
use crate::wire::{Envelope, Key, encode};

/// Handshake data, dropped once authenticated.
pub(super) struct Handshake {
    hello: Vec<u8>,
    transcript: [u8; 32],
    version: u64,
    /// The signing algorithm; `Some` exactly when signing is on.
    sign_alg: Option<SignAlg>,
    encryption: bool,
    /// The extensions agreed on (client: those the server accepted).
    extensions: Extensions,
    /// Whether the relay role is on (PROTOCOL.md §18.1).
    relay: bool,
    /// Server, relay role: the relay secret the client proved (the
    /// connection's secret from then on).
    relay_secret: Option<Secret>,
    peer: Identity,
}

impl Handshake {
    /// The secret of this connection: the relay secret the relay proved
    /// (server), or the configured one.
    fn secret<'a>(&'a self, configured: &'a Secret) -> &'a Secret {
        self.relay_secret.as_ref().unwrap_or(configured)
    }
}

impl Connection {
    /// Client: queues `hello` and keeps its line for the transcript.
    pub(super) fn send_hello(&mut self) {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let c = &self.config;
        let mut line = Vec::with_capacity(256);
        let hello = encode::Hello {
            versions: SUPPORTED_VERSIONS,
            nonce: &nonce,
            identity: &c.identity,
            max_frame: c.max_frame as u64,
            sign: c.signing,
            sign_algs: &c.sign_algs,
            seal: c.encryption,
            seal_alg: SEAL_ALG,
            extensions: c.extensions,
            relay: c.relay,
        };
        encode::hello(&mut line, &hello);
        self.out.extend_from_slice(&line);
        self.out.push(b'\n');
        self.stats.frames_out += 1;
        self.hs = Some(Box::new(Handshake {
            hello: line,
            transcript: [0; 32],
            version: 0,
            sign_alg: None,
            encryption: false,
            extensions: Extensions::NONE,
            relay: false,
            relay_secret: None,
            peer: Identity::default(),
        }));
    }

    /// Server: `hello` came; negotiates and answers with `challenge`.
    pub(super) fn on_hello(&mut self, env: &Envelope<'_>, line: &[u8]) -> Handled {
        let theirs = env.u64_list(Key::Versions)?;
        if theirs.is_empty() {
            return Err(ProtocolError::InvalidField {
                field: "versions",
                detail: "names no version",
            });
        }
        let Some(&version) = SUPPORTED_VERSIONS.iter().rev().find(|v| theirs.contains(v)) else {
            return Err(ProtocolError::VersionMismatch {
                ours: SUPPORTED_VERSIONS.to_vec(),
                theirs,
            });
        };
        // Each nonce enters the proofs with its whole line, through the
        // transcript; here only its form is checked.
        let _client_nonce: [u8; NONCE_LEN] = env.b64(Key::Nonce)?;
        let peer = env.identity()?;
        let peer_max = env.max_frame()?;
        let sign_alg = negotiate_signing(env, self.config.signing, &self.config.sign_algs)?;
        let encryption = negotiate_sealing(env, self.config.encryption)?;
        let (extensions, relay_offered) = accept_extensions(env, self.config.extensions)?;
        // The relay role only with relay secrets to check it against.
        let relay = relay_offered && self.config.usable_relay_secrets().next().is_some();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let mut ch = Vec::with_capacity(256);
        let challenge = encode::Challenge {
            version,
            nonce: &nonce,
            identity: &self.config.identity,
            conn: self.params.connection_id,
            max_frame: self.config.max_frame as u64,
            sign_alg,
            seal: encryption,
            extensions,
            relay,
        };
        encode::challenge(&mut ch, &challenge);
        let transcript = crypto::transcript_hash(line, &ch, &self.params.channel_binding);
        self.out.extend_from_slice(&ch);
        self.out.push(b'\n');
        self.stats.frames_out += 1;
        self.peer_max_frame = peer_max;
        self.hs = Some(Box::new(Handshake {
            hello: Vec::new(),
            transcript,
            version,
            sign_alg,
            encryption,
            extensions,
            relay,
            relay_secret: None,
            peer,
        }));
        self.state = State::AwaitAuth;
        Ok(())
    }

    /// Client: `challenge` came; checks the server's decisions and proves
    /// with `auth`.
    pub(super) fn on_challenge(&mut self, env: &Envelope<'_>, line: &[u8]) -> Handled {
        let version = env.u64(Key::Version)?;
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(ProtocolError::VersionMismatch {
                ours: SUPPORTED_VERSIONS.to_vec(),
                theirs: vec![version],
            });
        }
        let _server_nonce: [u8; NONCE_LEN] = env.b64(Key::Nonce)?;
        let peer = env.identity()?;
        let conn = env.u64(Key::Conn)?;
        let peer_max = env.max_frame()?;
        let signing = env.bool(Key::Sign)?;
        let encryption = env.bool(Key::Seal)?;
        check_decision(self.config.signing, signing, "signing")?;
        check_decision(self.config.encryption, encryption, "encryption")?;
        let sign_alg = if signing {
            let name = env.str(Key::SignAlg)?;
            let alg = SignAlg::parse(&name)
                .filter(|a| self.config.sign_algs.contains(a))
                .ok_or(ProtocolError::NegotiationFailed {
                    detail: "the peer chose a signing algorithm we did not offer",
                })?;
            Some(alg)
        } else {
            None
        };
        let (extensions, relay) =
            accepted_extensions(env, self.config.extensions, self.config.relay)?;
        if self.config.relay && !relay {
            return Err(ProtocolError::NegotiationFailed {
                detail: "we are a relay, the peer does not accept relays",
            });
        }
        let Some(hs) = self.hs.as_mut() else {
            return Err(ProtocolError::UnexpectedFrame {
                frame: "challenge".into(),
                state: "no handshake",
            });
        };
        hs.transcript = crypto::transcript_hash(&hs.hello, line, &self.params.channel_binding);
        hs.version = version;
        hs.sign_alg = sign_alg;
        hs.encryption = encryption;
        hs.extensions = extensions;
        hs.relay = relay;
        hs.peer = peer;
        hs.hello = Vec::new();
        let proof = crypto::client_proof(&self.config.secret, &hs.transcript);
        self.params.connection_id = conn;
        self.peer_max_frame = peer_max;
        encode::auth(&mut self.out, &proof);
        self.out.push(b'\n');
        self.stats.frames_out += 1;
        self.state = State::AwaitOk;
        Ok(())
    }

    /// Server: `auth` came; checks the client's proof, proves with `ok`
    /// and is authenticated.
    pub(super) fn on_auth(&mut self, now: Instant, env: &Envelope<'_>) -> Handled {
        // No proof of ours goes to a client that failed.
        let hs = self.take_proven(env, Side::Client)?;
        let ours = crypto::server_proof(hs.secret(&self.config.secret), &hs.transcript);
        encode::ok(&mut self.out, &ours);
        self.out.push(b'\n');
        self.stats.frames_out += 1;
        self.establish(now, *hs);
        Ok(())
    }

    /// Client: `ok` came; checks the server's proof and is authenticated.
    pub(super) fn on_ok(&mut self, now: Instant, env: &Envelope<'_>) -> Handled {
        let hs = self.take_proven(env, Side::Server)?;
        self.establish(now, *hs);
        Ok(())
    }

    /// The handshake, once the `proof` of `env` is `prover`'s proof over
    /// its transcript; [`ProtocolError::AuthFailed`] if it is not.
    fn take_proven(
        &mut self,
        env: &Envelope<'_>,
        prover: Side,
    ) -> Result<Box<Handshake>, ProtocolError> {
        let proof: [u8; TAG_LEN] = env.b64(Key::Proof)?;
        let Some(mut hs) = self.hs.take() else {
            return Err(ProtocolError::AuthFailed);
        };
        let client = prover == Side::Client;
        if client && hs.relay {
            // A relay proves with a relay secret, never the client secret
            // (PROTOCOL.md §18.1).
            let Some(s) = self
                .config
                .usable_relay_secrets()
                .find(|s| crypto::verify_proof(s, true, &hs.transcript, &proof))
            else {
                return Err(ProtocolError::AuthFailed);
            };
            hs.relay_secret = Some(s.clone());
            return Ok(hs);
        }
        if !crypto::verify_proof(&self.config.secret, client, &hs.transcript, &proof) {
            return Err(ProtocolError::AuthFailed);
        }
        Ok(hs)
    }

    /// Authenticated: keys the protection agreed on, starts keepalive and
    /// reports the peer.
    fn establish(&mut self, now: Instant, hs: Handshake) {
        if hs.sign_alg.is_some() || hs.encryption {
            let keys = SessionKeys::derive(hs.secret(&self.config.secret), &hs.transcript);
            let (send, recv) = match self.side {
                Side::Client => (keys.c2s, keys.s2c),
                Side::Server => (keys.s2c, keys.c2s),
            };
            self.protection = match hs.sign_alg {
                Some(alg) if !hs.encryption => Protection::Signed {
                    send: Box::new(FrameMac::new(alg, &send.mac)),
                    recv: Box::new(FrameMac::new(alg, &recv.mac)),
                },
                _ => Protection::Sealed {
                    send: Box::new(Sealer::new(&send)),
                    recv: Box::new(Sealer::new(&recv)),
                },
            };
        }
        self.set_timer(Timer::Handshake, None);
        self.state = State::Established;
        self.peer = Some(hs.peer.clone());
        self.extensions = hs.extensions;
        if hs.relay {
            self.relay = Some(Box::default());
        }
        let info = Authenticated {
            peer: hs.peer.clone(),
            connection_id: self.params.connection_id,
            version: hs.version,
            signing: hs.sign_alg.is_some() || hs.encryption,
            sign_alg: if hs.encryption { None } else { hs.sign_alg },
            encryption: hs.encryption,
            peer_max_frame: self.peer_max_frame,
            extensions: hs.extensions,
            relay: hs.relay,
        };
        self.link_info = Some(Box::new(info.clone()));
        self.events.push_back(Event::Authenticated(info));
        if let Some(ka) = &self.config.keepalive {
            let at = deadline_after(now, ka.interval);
            self.set_timer(Timer::KeepaliveSend, at);
        }
    }
}

/// Server side: the signing decision and algorithm from the client's
/// `sign` policy and `sign_alg` offer (a name or a list of names, in the
/// client's order); `Some` when signing is on. Like the sealing offer, an
/// offer (policy not `off`) naming no algorithm we know fails, whatever
/// the decision.
fn negotiate_signing(
    env: &Envelope<'_>,
    ours: Policy,
    our_algs: &[SignAlg],
) -> Result<Option<SignAlg>, ProtocolError> {
    let theirs = env.policy(Key::Sign)?;
    let offered = if theirs == Policy::Off {
        Vec::new()
    } else {
        let names = env.str_or_list(Key::SignAlg, MAX_SIGN_ALGS)?;
        let known: Vec<SignAlg> = names.iter().filter_map(|n| SignAlg::parse(n)).collect();
        if known.is_empty() {
            return Err(ProtocolError::NegotiationFailed {
                detail: "unknown signing algorithm",
            });
        }
        known
    };
    let on = Policy::negotiate(ours, theirs).map_err(|_| ProtocolError::NegotiationFailed {
        detail: "one side requires signing, the other refuses it",
    })?;
    if !on {
        return Ok(None);
    }
    our_algs
        .iter()
        .copied()
        .find(|a| offered.contains(a))
        .map(Some)
        .ok_or(ProtocolError::NegotiationFailed {
            detail: "no common signing algorithm",
        })
}

/// Server side: the sealing decision from the client's `seal` policy and
/// `seal_alg` offer (a name or a list of names, as for signing; one
/// algorithm is defined, and an offer that does not name it fails, as an
/// unknown signing offer does).
fn negotiate_sealing(env: &Envelope<'_>, ours: Policy) -> Result<bool, ProtocolError> {
    let theirs = env.policy(Key::Seal)?;
    if theirs != Policy::Off
        && !env
            .str_or_list(Key::SealAlg, MAX_SIGN_ALGS)?
            .iter()
            .any(|n| n == SEAL_ALG)
    {
        return Err(ProtocolError::NegotiationFailed {
            detail: "unknown encryption algorithm",
        });
    }
    Policy::negotiate(ours, theirs).map_err(|_| ProtocolError::NegotiationFailed {
        detail: "one side requires encryption, the other refuses it",
    })
}

/// Server side: the extensions to accept, those the client's `ext` offer
/// names that we know and allow (unknown names are skipped; no `ext` is no
/// offer), and whether it offers the relay role.
fn accept_extensions(
    env: &Envelope<'_>,
    ours: Extensions,
) -> Result<(Extensions, bool), ProtocolError> {
    let names = env.opt_str_list(Key::Ext, MAX_EXTENSIONS)?;
    let offered: Extensions = names
        .iter()
        .flatten()
        .filter_map(|n| Extension::parse(n))
        .collect();
    let relay = names.iter().flatten().any(|n| n == RELAY_EXTENSION);
    Ok((offered.intersection(ours), relay))
}

/// Client side: the extensions the server's `ext` accepted, each of which
/// must be one we offered (no `ext`: none accepted, as from a version 1
/// server).
fn accepted_extensions(
    env: &Envelope<'_>,
    offered: Extensions,
    relay_offered: bool,
) -> Result<(Extensions, bool), ProtocolError> {
    let mut accepted = Extensions::NONE;
    let mut relay = false;
    for name in env.opt_str_list(Key::Ext, MAX_EXTENSIONS)?.iter().flatten() {
        match Extension::parse(name) {
            Some(e) if offered.contains(e) => accepted = accepted.with(e),
            None if relay_offered && name == RELAY_EXTENSION => relay = true,
            _ => {
                return Err(ProtocolError::NegotiationFailed {
                    detail: "the peer accepted an extension we did not offer",
                });
            }
        }
    }
    Ok((accepted, relay))
}

/// Client side: the server's decision must respect our policy.
fn check_decision(ours: Policy, on: bool, what: &'static str) -> Result<(), ProtocolError> {
    match (ours, on) {
        (Policy::Required, false) => Err(ProtocolError::NegotiationFailed {
            detail: if what == "signing" {
                "we require signing, the peer turned it off"
            } else {
                "we require encryption, the peer turned it off"
            },
        }),
        (Policy::Off, true) => Err(ProtocolError::NegotiationFailed {
            detail: if what == "signing" {
                "we refuse signing, the peer turned it on"
            } else {
                "we refuse encryption, the peer turned it on"
            },
        }),
        _ => Ok(()),
    }
}
