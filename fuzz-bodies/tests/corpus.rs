//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and every
//! saved crash (`fuzz/regressions/<target>/`) through the fuzz bodies of
//! this crate, so each `cargo test` runs them and the targets never rot.
//!
//! The hand-written seeds (`seed-*`) are what [`seed_corpus_is_up_to_date`]
//! generates; rewrite them when an input layout changes:
//! `JSONLINK_WRITE_SEEDS=1 cargo test -p jsonlink-fuzz-bodies --test corpus seed_corpus`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use jsonlink_fuzz_bodies as fuzz;
use jsonlink_proto::Side;
use jsonlink_proto::testing::{client_config, server_config};

type Body = fn(Instant, &[u8]);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Regular files in `dir` (none if it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

fn replay(target: &str, body: Body) {
    // The test owns the clock; the bodies only add virtual time to it.
    #[allow(clippy::disallowed_methods)]
    let base = Instant::now();
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ is missing or empty"
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    let mut failed = Vec::new();
    for f in corpus.iter().chain(&regressions) {
        let data = std::fs::read(f).unwrap();
        if std::panic::catch_unwind(|| body(base, &data)).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failed.len(),
        corpus.len() + regressions.len(),
        failed.join("\n")
    );
}

#[test]
fn framer() {
    replay("framer", |_, data| fuzz::framer(data));
}

#[test]
fn handshake_server() {
    replay("handshake_server", fuzz::handshake_server);
}

#[test]
fn handshake_client() {
    replay("handshake_client", fuzz::handshake_client);
}

#[test]
fn session() {
    replay("session", fuzz::session);
}

#[test]
fn relay() {
    replay("relay", fuzz::relay);
}

// ------------------------------------------------------------- seed corpus

/// The lines an honest peer (seed 1, default policies) writes to a
/// connection on `side` with default policies (seed 1).
fn honest_lines(side: Side) -> Vec<Vec<u8>> {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let ours = match side {
        Side::Client => client_config(1),
        Side::Server => server_config(1),
    };
    fuzz::honest_peer_lines(now, side, &ours, usize::MAX)
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// A handshake body input: header, then the stream.
fn hs(cfg: u8, tick: u8, sizes: &[u8], stream: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![cfg, tick, sizes.len() as u8];
    v.extend_from_slice(sizes);
    for s in stream {
        v.extend_from_slice(s);
    }
    v
}

/// A framer input.
fn fr(limit: u16, flags: u8, sizes: &[u8], stream: &[u8]) -> Vec<u8> {
    let mut v = limit.to_le_bytes().to_vec();
    v.push(flags);
    v.push(sizes.len() as u8);
    v.extend_from_slice(sizes);
    v.extend_from_slice(stream);
    v
}

/// Session operations (see `jsonlink_fuzz_bodies::session`).
struct Ops(Vec<u8>);

const SRV: u8 = 0x80;
/// Bodies: `{"op":"op<a>","n":<n>}`, a string of `n` x's, `null`.
fn obj(a: u8, n: u16) -> Vec<u8> {
    let [lo, hi] = n.to_le_bytes();
    vec![3, a, lo, hi]
}
fn xs(n: u16) -> Vec<u8> {
    let [lo, hi] = n.to_le_bytes();
    vec![2, lo, hi]
}
fn text(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

impl Ops {
    fn new(client: u8, server: u8) -> Self {
        Self(vec![client, server])
    }
    fn op(mut self, b: u8, args: &[u8]) -> Self {
        self.0.push(b);
        self.0.extend_from_slice(args);
        self
    }
    fn send(self, who: u8, body: &[u8]) -> Self {
        self.op(who, body)
    }
    fn request(self, who: u8, body: &[u8], timeout: u8) -> Self {
        let mut a = body.to_vec();
        a.push(timeout);
        self.op(who | 1, &a)
    }
    fn respond(self, who: u8, pick: u8, answer: &[u8]) -> Self {
        let mut a = vec![pick];
        a.extend_from_slice(answer);
        self.op(who | 2, &a)
    }
    fn ping(self, who: u8, kind: &[u8]) -> Self {
        self.op(who | 3, kind)
    }
    fn close(self, who: u8, reason: &str) -> Self {
        self.op(who | 4, &text(reason))
    }
    /// Virtual time, in steps of at most 25.5 s (5.1 s when either side
    /// has small limits).
    fn advance(mut self, ms: u32) -> Self {
        let small = (self.0[0] | self.0[1]) & 0x10 != 0;
        let mut left = ms / if small { 20 } else { 100 };
        while left > 0 {
            let n = left.min(255);
            self = self.op(5, &[n as u8]);
            left -= n;
        }
        self
    }
    fn drive(self) -> Self {
        self.op(6, &[])
    }
    fn chunks(self, who: u8, sizes: &[u8]) -> Self {
        let mut a = vec![sizes.len() as u8 - 1];
        a.extend_from_slice(sizes);
        self.op(who | 7, &a)
    }
    fn tamper(self, who: u8, pos: u16, mask: u8) -> Self {
        let [lo, hi] = pos.to_le_bytes();
        self.op(who | 8, &[lo, hi, mask])
    }
    fn cut(self, who: u8) -> Self {
        self.op(who | 9, &[])
    }
    fn toggle_reading(self, who: u8) -> Self {
        self.op(who | 10, &[])
    }
    /// Bytes fed to the other side as if `who` wrote them.
    fn inject(self, who: u8, bytes: &[u8]) -> Self {
        let mut a = vec![bytes.len() as u8];
        a.extend_from_slice(bytes);
        self.op(who | 11, &a)
    }
    fn respond_all(self, who: u8) -> Self {
        self.op(who | 12, &[])
    }
    fn step(self) -> Self {
        self.op(15, &[])
    }
    /// A little traffic both ways, answered.
    fn traffic(self) -> Self {
        self.send(0, &obj(1, 2))
            .request(0, &obj(2, 3), 0)
            .send(SRV, &[1, 7, 0])
            .request(SRV, &[5], 20)
            .drive()
            .respond_all(SRV)
            .respond(0, 0, &[0, 0])
            .drive()
    }
}

/// Relay operations (see `jsonlink_fuzz_bodies::relay`).
struct RelayOps(Vec<u8>);

impl RelayOps {
    fn new(cfg: u8) -> Self {
        Self(vec![cfg])
    }
    fn op(mut self, b: u8, args: &[u8]) -> Self {
        self.0.push(b);
        self.0.extend_from_slice(args);
        self
    }
    fn join(self, ext: u8, max_frame: u16) -> Self {
        let [lo, hi] = max_frame.to_le_bytes();
        self.op(0, &[ext, lo, hi])
    }
    fn leave(self, who: u8, pick: u8, code: u8) -> Self {
        self.op(who | 1, &[pick, code])
    }
    fn forward(self, pick: u8, id: u8, body: &[u8]) -> Self {
        let mut a = vec![pick, id];
        a.extend_from_slice(body);
        self.op(2, &a)
    }
    fn request(self, pick: u8, body: &[u8], timeout: u8) -> Self {
        let mut a = vec![pick];
        a.extend_from_slice(body);
        a.push(timeout);
        self.op(SRV | 3, &a)
    }
    fn answer(self, who: u8, pick: u8, ok: bool, body: &[u8]) -> Self {
        let mut a = vec![pick, u8::from(!ok)];
        a.extend_from_slice(body);
        self.op(who | 4, &a)
    }
    fn message(self, who: u8, pick: u8, body: &[u8]) -> Self {
        let mut a = vec![pick];
        a.extend_from_slice(body);
        self.op(who | 5, &a)
    }
    fn advance(self, tenths: u8) -> Self {
        self.op(6, &[tenths])
    }
    fn drive(self) -> Self {
        self.op(7, &[])
    }
    /// A relay frame of `kind` injected into the other side of `who`.
    fn forge(self, who: u8, kind: u8, c: u8, id: u8, body: &[u8]) -> Self {
        let mut a = vec![kind, c, id];
        a.extend_from_slice(body);
        self.op(who | 8, &a)
    }
    fn close(self, who: u8) -> Self {
        self.op(who | 10, &[])
    }
    fn cut(self, who: u8) -> Self {
        self.op(who | 11, &[])
    }
    fn step(self) -> Self {
        self.op(15, &[])
    }
    /// Two clients, a request each way for each, answered.
    fn traffic(self) -> Self {
        self.join(0, 4096)
            .join(1, 2048)
            .drive()
            .forward(0, 1, &obj(1, 1))
            .forward(1, 1, &obj(2, 1))
            .request(0, &[0], 20)
            .request(1, &xs(10), 0)
            .message(0, 0, &obj(3, 1))
            .message(SRV, 1, &[1, 5, 0])
            .drive()
            .answer(SRV, 0, true, &[0])
            .answer(SRV, 0, false, &[0])
            .answer(0, 0, true, &xs(3000))
            .answer(0, 0, true, &[0])
            .drive()
    }
}

/// The hand-written seeds in `fuzz/corpus/*/seed-*` are exactly what this
/// generator makes, so they cannot rot when an input layout changes. Run
/// with `JSONLINK_WRITE_SEEDS=1` to rewrite them after such a change.
#[test]
fn seed_corpus_is_up_to_date() {
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| {
        seeds.push((target, name.to_owned(), data));
    };

    // framer: limit u16, flags, split sizes, stream.
    let hello = honest_lines(Side::Server).remove(0);
    add("framer", "basic", fr(16, 0, &[], b"ab\ncd\n\nef"));
    add("framer", "limit-exact", fr(5, 0, &[1], b"12345\n123456\n"));
    add("framer", "limit-zero", fr(0, 0, &[], b"\n\n\nx"));
    add("framer", "tail-over", fr(4, 0, &[2, 0, 3], b"ab\ncdefg"));
    add(
        "framer",
        "split-buffered",
        fr(10, 0xff, &[3, 1, 7], b"0123456789\nab\n01234567890\n"),
    );
    add(
        "framer",
        "no-limit",
        fr(u16::MAX, 0x0f, &[1], b"{\"t\":\"x\"}\r\n\xff\xfe\n"),
    );
    add("framer", "hello", fr(1024, 0x55, &[5, 64], &hello));
    add("framer", "hello-small", fr(100, 0, &[200], &hello));

    // handshake_server: cfg (0x05 = default policies; +0x20 hello prefix,
    // +0x40 whole handshake, +0x10 small limits, +0x80 EOF), tick, splits.
    let client = honest_lines(Side::Server);
    let (hello, auth) = (&client[0][..], &client[1][..]);
    let app: &[&[u8]] = &[
        b"{\"t\":\"msg\",\"d\":{\"op\":\"hi\",\"x\":[1,2]}}\n",
        b"{\"t\":\"req\",\"id\":1,\"d\":{\"op\":\"add\",\"a\":2}}\n",
        b"{\"t\":\"ping\",\"d\":{\"k\":1}}\n",
        b"{\"t\":\"ping\"}\n",
        b"{\"t\":\"pong\"}\n",
        b"{\"t\":\"res\",\"id\":3,\"d\":1}\n",
        b"{\"t\":\"res\",\"id\":4,\"err\":{\"code\":\"busy\",\"message\":\"m\"}}\n",
        b"{\"t\":\"req\",\"id\":2,\"d\":null,\"extra\":true}\n",
        b"{\"t\":\"close\",\"code\":\"normal\",\"reason\":\"bye\"}\n",
        b"{\"t\":\"msg\",\"d\":\"after close\"}\n",
    ];
    let bad: &[&[u8]] = &[
        b"null\n",
        b"[1,2]\n",
        b"\xff\xfe\n",
        b"{\"t\":\"msg\",\"t\":\"msg\",\"d\":1}\n",
        b"{\"t\":\"req\",\"id\":1.5,\"d\":0}\n",
        b"{\"t\":\"req\",\"id\":-1,\"d\":0}\n",
        b"{\"t\":\"req\",\"id\":\"1\",\"d\":0}\n",
        b"{\"t\":\"req\",\"id\":18446744073709551616,\"d\":0}\n",
        b"{\"t\":\"res\",\"id\":1,\"d\":1,\"err\":{}}\n",
        b"{\"t\":\"res\",\"id\":1,\"err\":{\"code\":1}}\n",
        b"{\"t\":\"ping\",\"d\":[1]}\n",
        b"{\"t\":\"msg\"}\n",
        b"{\"t\":\"nope\"}\n",
        b"{\"t\":\"close\",\"code\":\"integrity\",\"reason\":\"x\"}\n",
    ];
    let s = "handshake_server";
    add(s, "hello", hs(0x05, 0, &[], &[hello]));
    let mut full = vec![hello, auth];
    full.extend_from_slice(app);
    add(s, "raw-full", hs(0x05, 0, &[], &full));
    add(s, "raw-full-split", hs(0x05, 0, &[1, 7, 0, 40], &full));
    let mut after_hello = vec![auth];
    after_hello.extend_from_slice(app);
    add(s, "prefix-hello", hs(0x25, 0, &[], &after_hello));
    add(s, "prefix-full-app", hs(0x45, 0, &[], app));
    add(s, "prefix-full-app-tick", hs(0x45, 30, &[60], app));
    add(s, "prefix-full-bad", hs(0x45, 0, &[], bad));
    for (i, b) in bad.iter().enumerate() {
        add(s, &format!("bad-{i:02}"), hs(0x45, 0, &[], &[b]));
    }
    let reqs: Vec<Vec<u8>> = (1..6)
        .map(|i| format!("{{\"t\":\"req\",\"id\":{i},\"d\":{i}}}\n").into_bytes())
        .collect();
    let reqs: Vec<&[u8]> = reqs.iter().map(Vec::as_slice).collect();
    add(s, "small-busy", hs(0x55, 0, &[], &reqs));
    add(s, "dup-request", hs(0x45, 0, &[], &[reqs[0], reqs[0]]));
    add(s, "signed-garbage", hs(0x47, 0, &[], app));
    add(
        s,
        "sealed-garbage",
        hs(
            0x4d,
            0,
            &[],
            &[b"{\"s\":1,\"c\":\"AAAA\",\"m\":\"AAAA\"}\n"],
        ),
    );
    add(s, "pre-auth-msg", hs(0x05, 0, &[], &[app[0]]));
    add(s, "pre-auth-bad", hs(0x05, 0, &[], &bad[..3]));
    add(s, "too-large", hs(0x15, 0, &[100], &[&[b'x'; 600]]));
    add(s, "eof-mid-hello", hs(0x85, 0, &[], &[&hello[..40]]));
    add(s, "slow-hello", hs(0x05, 50, &[10, 40], &[hello]));
    add(s, "version-2", hs(0x05, 0, &[], &[b"{\"t\":\"hello\",\"versions\":[2,3],\"nonce\":\"AAAAAAAAAAAAAAAAAAAAAA==\",\"node\":\"n\",\"designation\":\"d\",\"max_frame\":2048,\"sign\":\"off\",\"sign_alg\":\"hmac-sha256\",\"seal\":\"off\",\"seal_alg\":\"aes-256-cbc-hmac-sha256\"}\n"]));
    let hello_s = String::from_utf8(hello.to_vec()).unwrap();
    let variants = [
        (
            "hello-sign-required",
            hello_s.replace("\"sign\":\"optional\"", "\"sign\":\"required\""),
        ),
        (
            "hello-seal-required",
            hello_s.replace("\"seal\":\"optional\"", "\"seal\":\"required\""),
        ),
        (
            "hello-bad-alg",
            hello_s
                .replace("\"sign\":\"optional\"", "\"sign\":\"preferred\"")
                .replace("hmac-sha256", "md5"),
        ),
        (
            "hello-small-frame",
            hello_s.replace("\"max_frame\":8388608", "\"max_frame\":1023"),
        ),
        (
            "hello-bad-nonce",
            hello_s.replace("\"nonce\":\"", "\"nonce\":\"A"),
        ),
    ];
    for (name, h) in &variants {
        add(s, name, hs(0x05, 0, &[], &[h.as_bytes()]));
    }
    add(
        s,
        "hello-sign-off-vs-required",
        hs(
            0x07,
            0,
            &[],
            &[variants[1]
                .1
                .replace("\"sign\":\"optional\"", "\"sign\":\"off\"")
                .as_bytes()],
        ),
    );
    add(
        s,
        "hello-then-bad-auth",
        hs(
            0x05,
            0,
            &[],
            &[
                hello,
                b"{\"t\":\"auth\",\"proof\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}\n",
            ],
        ),
    );

    // handshake_client: the same header.
    let server = honest_lines(Side::Client);
    let (challenge, ok) = (&server[0][..], &server[1][..]);
    let c = "handshake_client";
    let mut full = vec![challenge, ok];
    full.extend_from_slice(app);
    add(c, "raw-full", hs(0x05, 0, &[], &full));
    add(c, "raw-full-split", hs(0x05, 0, &[2, 0, 9, 33], &full));
    let mut after = vec![ok];
    after.extend_from_slice(app);
    add(c, "prefix-challenge", hs(0x25, 0, &[], &after));
    add(c, "prefix-full-app", hs(0x45, 0, &[], app));
    add(c, "prefix-full-bad", hs(0x45, 0, &[], bad));
    add(
        c,
        "prefix-full-keepalive",
        hs(
            0x45,
            100,
            &[20],
            &[
                b"{\"t\":\"pong\"}\n",
                b"{\"t\":\"ping\"}\n",
                b"{\"t\":\"pong\"}\n",
            ],
        ),
    );
    add(c, "signed-garbage", hs(0x47, 0, &[], app));
    add(c, "sealed-garbage", hs(0x4d, 0, &[], app));
    add(
        c,
        "small-big-msg",
        hs(
            0x55,
            0,
            &[],
            &[format!("{{\"t\":\"msg\",\"d\":\"{}\"}}\n", "y".repeat(1100)).as_bytes()],
        ),
    );
    add(
        c,
        "eof-after-challenge",
        hs(0xa5, 0, &[], &[b"{\"t\":\"ok\""]),
    );
    add(c, "ok-first", hs(0x05, 0, &[], &[ok]));
    add(c, "challenge-only", hs(0x05, 0, &[], &[challenge]));
    add(
        c,
        "challenge-close",
        hs(
            0x05,
            0,
            &[],
            &[
                challenge,
                b"{\"t\":\"close\",\"code\":\"auth_failed\",\"reason\":\"no\"}\n",
            ],
        ),
    );
    add(
        c,
        "wrong-ok",
        hs(
            0x25,
            0,
            &[],
            &[b"{\"t\":\"ok\",\"proof\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}\n"],
        ),
    );
    let ch = String::from_utf8(challenge.to_vec()).unwrap();
    add(
        c,
        "challenge-v2",
        hs(
            0x05,
            0,
            &[],
            &[ch.replace("\"version\":1", "\"version\":2").as_bytes()],
        ),
    );
    add(
        c,
        "challenge-sign-on-vs-off",
        hs(
            0x04,
            0,
            &[],
            &[ch.replace("\"sign\":false", "\"sign\":true").as_bytes()],
        ),
    );
    add(
        c,
        "challenge-sign-off-vs-required",
        hs(0x07, 0, &[], &[challenge]),
    );
    add(
        c,
        "challenge-seal-on",
        hs(
            0x05,
            0,
            &[],
            &[ch.replace("\"seal\":false", "\"seal\":true").as_bytes(), ok],
        ),
    );
    add(c, "slow", hs(0x05, 40, &[30], &full));

    // session: client cfg, server cfg (0x05 = default policies; 0x07 the
    // client requires signing, 0x0d encryption; 0x10 small limits).
    let s = "session";
    add(s, "plain", Ops::new(0x05, 0x05).traffic().0);
    add(s, "signed", Ops::new(0x07, 0x05).traffic().0);
    add(s, "sealed", Ops::new(0x0d, 0x05).traffic().0);
    add(s, "small-limits", {
        let mut o = Ops::new(0x15, 0x15);
        for i in 0..5 {
            o = o.request(0, &obj(i, 1), 0);
        }
        o.send(0, &xs(900))
            .send(0, &xs(300))
            .send(0, &xs(300))
            .drive()
            .request(SRV, &[0], 0)
            .request(SRV, &[0], 0)
            .request(SRV, &[0], 0)
            .drive()
            .advance(3000)
            .drive()
            .0
    });
    add(
        s,
        "tamper-signed",
        Ops::new(0x07, 0x05)
            .send(0, &obj(1, 1))
            .tamper(0, 10, 1)
            .drive()
            .0,
    );
    add(
        s,
        "tamper-plain",
        Ops::new(0x05, 0x05)
            .request(0, &obj(1, 1), 0)
            .drive()
            .tamper(SRV, 26, 2)
            .respond_all(SRV)
            .drive()
            .0,
    );
    add(
        s,
        "cut",
        Ops::new(0x05, 0x05)
            .request(0, &obj(1, 1), 0)
            .request(SRV, &[0], 0)
            .drive()
            .cut(0)
            .drive()
            .0,
    );
    add(
        s,
        "graceful-close",
        Ops::new(0x05, 0x05)
            .request(0, &obj(1, 1), 0)
            .drive()
            .close(0, "bye")
            .drive()
            .request(SRV, &[0], 0)
            .respond_all(SRV)
            .drive()
            .0,
    );
    add(
        s,
        "keepalive",
        Ops::new(0x05, 0x05)
            .advance(20_000)
            .toggle_reading(SRV)
            .advance(40_000)
            .drive()
            .0,
    );
    add(
        s,
        "request-timeouts",
        Ops::new(0x05, 0x05)
            .request(0, &[0], 3)
            .request(0, &[0], 200)
            .drive()
            .advance(1_000)
            .respond_all(SRV)
            .drive()
            .0,
    );
    add(
        s,
        "chunks",
        Ops::new(0x05, 0x05)
            .chunks(0, &[1])
            .chunks(SRV, &[3, 0, 7])
            .traffic()
            .0,
    );
    add(
        s,
        "chunks-sealed",
        Ops::new(0x0d, 0x0d)
            .chunks(0, &[5, 17])
            .chunks(SRV, &[1])
            .traffic()
            .0,
    );
    add(
        s,
        "inject",
        Ops::new(0x05, 0x05)
            .request(0, &obj(1, 1), 0)
            .inject(SRV, b"{\"t\":\"res\",\"id\":1,\"d\":9}\n")
            .inject(0, b"{\"t\":\"req\",\"id\":1,\"d\":0}\n")
            .drive()
            .respond_all(SRV)
            .drive()
            .0,
    );
    add(
        s,
        "errors",
        Ops::new(0x05, 0x05)
            .request(0, &obj(1, 1), 0)
            .request(0, &obj(2, 1), 0)
            .drive()
            .respond(
                SRV,
                0,
                &[1, 3, b'b', b'a', b'd', 4, b'\n', b'"', 0xc3, 0xa9],
            )
            .respond(SRV, 0, &[2, 2, b'c', b'd', 1, b'm', 3, 1, 2, 3])
            .respond(SRV, 0xf5, &[0, 0, 77, 0])
            .drive()
            .0,
    );
    add(
        s,
        "pings",
        Ops::new(0x05, 0x05)
            .ping(0, &[0])
            .ping(SRV, &[1])
            .ping(0, &[2, 0])
            .ping(0, &[2, 3, 1, 1, 1])
            .drive()
            .0,
    );
    add(s, "binding-mismatch", Ops::new(0xff, 0x05).traffic().0);
    add(s, "negotiation-fails", Ops::new(0x07, 0x04).traffic().0);
    add(
        s,
        "no-keepalive",
        Ops::new(0x25, 0x45).advance(60_000).traffic().0,
    );
    add(
        s,
        "stuck-reader",
        Ops::new(0x15, 0x15)
            .toggle_reading(SRV)
            .send(0, &xs(800))
            .send(0, &xs(800))
            .step()
            .send(0, &xs(800))
            .step()
            .step()
            .advance(5_000)
            .0,
    );
    add(
        s,
        "steps",
        Ops::new(0x05, 0x05)
            .send(0, &obj(1, 1))
            .step()
            .request(SRV, &[1, 1, 0], 0)
            .step()
            .step()
            .close(SRV, "x")
            .step()
            .step()
            .step()
            .0,
    );

    // relay: cfg (0x05 default policies; 0x07 signing, 0x0d sealing; 0x10
    // small limits, 0x20 a server limit of two relayed clients).
    let r = "relay";
    add(r, "plain", RelayOps::new(0x05).traffic().0);
    add(r, "signed", RelayOps::new(0x07).traffic().0);
    add(r, "sealed-small", RelayOps::new(0x1d).traffic().0);
    add(
        r,
        "leaves",
        RelayOps::new(0x05)
            .traffic()
            .forward(0, 2, &[0])
            .request(1, &[0], 0)
            .leave(0, 0, 1)
            .leave(SRV, 0, 0)
            .leave(SRV, 0, 2)
            .step()
            .drive()
            .advance(60)
            .0,
    );
    add(
        r,
        "limit",
        RelayOps::new(0x25)
            .join(0, 4096)
            .join(0, 4096)
            .join(0, 4096)
            .join(0, 100)
            .drive()
            .0,
    );
    add(
        r,
        "forged",
        RelayOps::new(0x05)
            .traffic()
            .forge(0, 2, 1, 0, &[0])
            .forge(0, 4, 2, 9, &[0])
            .forge(0, 6, 1, 1, &[0])
            .forge(SRV, 3, 1, 7, &[0])
            .forge(SRV, 0, 9, 1, &[0])
            .forge(0, 0, 200, 1, &[0])
            .drive()
            .0,
    );
    add(
        r,
        "races",
        RelayOps::new(0x05)
            .join(0, 4096)
            .drive()
            .leave(SRV, 0, 2)
            .forward(0, 1, &[0])
            .message(0, 0, &[0])
            .step()
            .step()
            .request(0, &[0], 0)
            .drive()
            .0,
    );
    add(
        r,
        "close-cut",
        RelayOps::new(0x05)
            .traffic()
            .forward(0, 3, &[0])
            .request(1, &[0], 0)
            .close(SRV)
            .join(0, 4096)
            .step()
            .drive()
            .cut(0)
            .drive()
            .0,
    );

    let corpus = fuzz_dir().join("corpus");
    let write = std::env::var_os("JSONLINK_WRITE_SEEDS").is_some();
    for (target, name, data) in seeds {
        let dir = corpus.join(target);
        let path = dir.join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &data).unwrap();
        } else {
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert!(
                on_disk == data,
                "{} is stale: rerun with JSONLINK_WRITE_SEEDS=1",
                path.display()
            );
        }
    }
}
