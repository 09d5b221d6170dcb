//! Micro-benchmarks of the sans-IO core: framing, a full handshake, signing
//! and verifying, sealing and opening, and a request/response round trip
//! through two in-memory peers, each for a ~100 B and a 64 KiB body.
//!
//! Run: `cargo bench -p jsonlink-proto` (about two minutes), or one group:
//! `cargo bench -p jsonlink-proto -- round_trip`.
#![allow(
    clippy::disallowed_methods, // a benchmark owns the real clock
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonlink_proto::crypto::{self, SessionKeys};
use jsonlink_proto::internals::{self, Line, LineReader};
use jsonlink_proto::testing::{client_config, server_config};
use jsonlink_proto::{Config, Connection, ConnectionParams, Event, Policy, Secret, Side, SignAlg};
use serde_json::value::RawValue;

/// The three protection modes a link can negotiate.
#[derive(Clone, Copy)]
enum Mode {
    Plain,
    /// Signed with the default algorithm (AES-256-GMAC).
    Signed,
    /// Signed with HMAC-SHA256.
    SignedHmac,
    Sealed,
}

impl Mode {
    const ALL: [Self; 4] = [Self::Plain, Self::Signed, Self::SignedHmac, Self::Sealed];

    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Signed => "signed",
            Self::SignedHmac => "signed-hmac",
            Self::Sealed => "sealed",
        }
    }

    fn apply(self, c: &mut Config) {
        let (sign, seal) = match self {
            Self::Plain => (Policy::Off, Policy::Off),
            Self::Signed | Self::SignedHmac => (Policy::Required, Policy::Off),
            Self::Sealed => (Policy::Required, Policy::Required),
        };
        c.signing = sign;
        c.encryption = seal;
        if let Self::SignedHmac = self {
            c.sign_algs = vec![SignAlg::HmacSha256];
        }
        c.keepalive = None;
    }
}

/// A JSON object body of about `len` bytes: `{"op":"bench","seq":1,"data":"xxx…"}`.
fn body(len: usize) -> Box<RawValue> {
    let head = r#"{"op":"bench","seq":1,"data":""}"#.len();
    let pad = "x".repeat(len.saturating_sub(head));
    RawValue::from_string(format!(r#"{{"op":"bench","seq":1,"data":"{pad}"}}"#)).unwrap()
}

const SIZES: [(&str, usize); 2] = [("100B", 100), ("64KiB", 64 * 1024)];

/// Moves bytes both ways until neither side has anything to send.
fn pump(a: &mut Connection, b: &mut Connection, now: Instant, buf: &mut Vec<u8>) {
    loop {
        buf.clear();
        a.poll_transmit(buf);
        let moved_a = !buf.is_empty();
        if moved_a {
            b.handle_input(now, buf);
        }
        buf.clear();
        b.poll_transmit(buf);
        let moved_b = !buf.is_empty();
        if moved_b {
            a.handle_input(now, buf);
        }
        if !moved_a && !moved_b {
            return;
        }
    }
}

fn configs(mode: Mode) -> (Arc<Config>, Arc<Config>) {
    let mut c = client_config(1);
    let mut s = server_config(1);
    // Benchmarks want fresh randomness like production, not a fixed seed.
    c.rng_seed = None;
    s.rng_seed = None;
    mode.apply(&mut c);
    mode.apply(&mut s);
    (Arc::new(c), Arc::new(s))
}

/// An authenticated pair in `mode`, events drained.
fn established(mode: Mode, now: Instant) -> (Connection, Connection) {
    let (cc, sc) = configs(mode);
    let mut c = Connection::new(cc, Side::Client, now, ConnectionParams::default());
    let mut s = Connection::new(sc, Side::Server, now, ConnectionParams::default());
    let mut buf = Vec::new();
    pump(&mut c, &mut s, now, &mut buf);
    assert!(matches!(c.poll_event(), Some(Event::Authenticated(_))));
    assert!(matches!(s.poll_event(), Some(Event::Authenticated(_))));
    (c, s)
}

fn bench_framing(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("frame");
    let now = Instant::now();
    for (size_name, size) in SIZES {
        let b = body(size);
        // Encode: one `msg` frame queued and taken out (plain link).
        let (mut c, _s) = established(Mode::Plain, now);
        let mut out = Vec::with_capacity(size + 64);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("encode_msg/{size_name}"), |bn| {
            bn.iter(|| {
                c.send(black_box(&b)).unwrap();
                out.clear();
                c.poll_transmit(&mut out);
                black_box(out.len())
            })
        });

        // Split lines only (LineReader): 16 frames per input.
        let (mut c, _s) = established(Mode::Plain, now);
        for _ in 0..16 {
            c.send(&b).unwrap();
        }
        let mut wire = Vec::new();
        c.poll_transmit(&mut wire);
        let per_frame = wire.len() / 16;
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(format!("split_lines_x16/{size_name}"), |bn| {
            let mut r = LineReader::new();
            bn.iter(|| {
                let mut input = black_box(&wire[..]);
                let mut n = 0;
                while let Some(l) = r.next(&mut input, usize::MAX).unwrap() {
                    match l {
                        Line::Input(l) => n += l.len(),
                        Line::Buffered => r.consume_buffered(),
                    }
                }
                n
            })
        });

        // Decode: one frame through `handle_input` to `Event::Message`.
        let (mut c, mut s) = established(Mode::Plain, now);
        c.send(&b).unwrap();
        let mut one = Vec::new();
        c.poll_transmit(&mut one);
        assert_eq!(one.len(), per_frame);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("decode_msg/{size_name}"), |bn| {
            bn.iter(|| {
                s.handle_input(now, black_box(&one));
                black_box(s.poll_event().unwrap())
            })
        });
    }
    g.finish();
}

fn bench_handshake(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("handshake");
    let now = Instant::now();
    for mode in Mode::ALL {
        let (cc, sc) = configs(mode);
        let mut buf = Vec::new();
        g.bench_function(mode.name(), |bn| {
            bn.iter(|| {
                let mut c =
                    Connection::new(cc.clone(), Side::Client, now, ConnectionParams::default());
                let mut s =
                    Connection::new(sc.clone(), Side::Server, now, ConnectionParams::default());
                pump(&mut c, &mut s, now, &mut buf);
                let ok = matches!(c.poll_event(), Some(Event::Authenticated(_)))
                    && matches!(s.poll_event(), Some(Event::Authenticated(_)));
                assert!(ok);
                (c, s)
            })
        });
    }
    g.finish();
}

fn bench_crypto(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("crypto");
    let secret = Secret::from_bytes(vec![7u8; 32]).unwrap();
    let keys = SessionKeys::derive(&secret, &[9u8; 32]);
    let iv = [3u8; crypto::IV_LEN];
    for (size_name, size) in SIZES {
        let inner = format!(r#"{{"t":"msg","d":{}}}"#, body(size).get()).into_bytes();
        g.throughput(Throughput::Bytes(inner.len() as u64));

        let mut out = Vec::with_capacity(inner.len() * 2);
        // Keyed once, as a connection does: the per-frame cost.
        for alg in SignAlg::ALL {
            let mac = internals::FrameMac::new(alg, &keys.c2s.mac);
            g.bench_function(format!("sign/{alg}/{size_name}"), |bn| {
                bn.iter(|| {
                    out.clear();
                    internals::sign_with(&mac, 5, black_box(&inner), &mut out);
                    out.len()
                })
            });
            out.clear();
            internals::sign_with(&mac, 5, &inner, &mut out);
            let signed = out.clone();
            g.bench_function(format!("verify/{alg}/{size_name}"), |bn| {
                bn.iter(|| {
                    internals::open_signed_with(&mac, black_box(&signed))
                        .unwrap()
                        .1
                        .len()
                })
            });
        }

        g.bench_function(format!("seal/{size_name}"), |bn| {
            bn.iter(|| {
                out.clear();
                crypto::seal_frame(&keys.c2s, 5, &iv, black_box(&inner), &mut out);
                out.len()
            })
        });
        out.clear();
        crypto::seal_frame(&keys.c2s, 5, &iv, &inner, &mut out);
        let sealed = out.clone();
        g.bench_function(format!("open/{size_name}"), |bn| {
            bn.iter(|| {
                crypto::open_sealed(&keys.c2s, black_box(&sealed))
                    .unwrap()
                    .1
                    .len()
            })
        });
    }
    g.finish();
}

fn bench_round_trip(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("round_trip");
    let now = Instant::now();
    let timeout = Some(Duration::from_secs(30));
    for (size_name, size) in SIZES {
        let b = body(size);
        g.throughput(Throughput::Bytes(2 * size as u64));
        for mode in Mode::ALL {
            let (mut c, mut s) = established(mode, now);
            let mut buf = Vec::with_capacity(2 * size + 256);
            g.bench_function(format!("{}/{size_name}", mode.name()), |bn| {
                bn.iter(|| {
                    let id = c.request(now, black_box(&b), timeout).unwrap();
                    buf.clear();
                    c.poll_transmit(&mut buf);
                    s.handle_input(now, &buf);
                    let Some(Event::Request { id: rid, body, .. }) = s.poll_event() else {
                        panic!("no request")
                    };
                    s.respond(rid, Ok(body.raw())).unwrap();
                    buf.clear();
                    s.poll_transmit(&mut buf);
                    c.handle_input(now, &buf);
                    match c.poll_event() {
                        Some(Event::Response { id: got, body }) if got == id => body,
                        other => panic!("unexpected {other:?}"),
                    }
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_framing, bench_handshake, bench_crypto, bench_round_trip
}
criterion_main!(benches);
