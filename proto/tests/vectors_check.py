#!/usr/bin/env python3
"""Independent check of PROTOCOL.md's test vectors, standard library only.

Reads the ``name = value`` lines of the ```text blocks in PROTOCOL.md's
"Test vectors" section and recomputes every derived value from the inputs
with hashlib/hmac/base64 and a small AES-256 and GHASH written here
(self-tested against FIPS-197 and the GCM specification's test vectors),
without using any jsonlink code.

Run from anywhere:

    python3 proto/tests/vectors_check.py [path/to/PROTOCOL.md]

Exit status 0 and "all N checks passed" means the document is consistent
with this second implementation of the formulas it describes.
"""

import base64
import hashlib
import hmac
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DOC = os.path.join(HERE, "..", "..", "PROTOCOL.md")


# --------------------------------------------------------------- the doc

def document_vectors(path):
    vectors = {}
    in_section = in_block = False
    with open(path, encoding="utf-8") as f:
        for line in f.read().split("\n"):
            if line.startswith("## "):
                in_section = "Test vectors" in line
                continue
            if not in_section:
                continue
            if line.startswith("```"):
                in_block = (not in_block) and line == "```text"
                continue
            if in_block and " = " in line:
                k, v = line.split(" = ", 1)
                k = k.strip()
                if k in vectors:
                    raise SystemExit(f"vector {k} appears twice")
                vectors[k] = v
    if not vectors:
        raise SystemExit("no Test vectors section found in " + path)
    return vectors


# ------------------------------------------------------------ AES-256

def _xtime(a):
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _gmul(a, b):
    r = 0
    while b:
        if b & 1:
            r ^= a
        a = _xtime(a)
        b >>= 1
    return r


def _make_sbox():
    sbox = []
    for x in range(256):
        inv = 0
        if x:
            inv = next(y for y in range(1, 256) if _gmul(x, y) == 1)
        s = inv
        r = inv
        for _ in range(4):
            r = ((r << 1) | (r >> 7)) & 0xFF
            s ^= r
        sbox.append(s ^ 0x63)
    return sbox


SBOX = _make_sbox()


def _expand_key_256(key):
    assert len(key) == 32
    words = [list(key[i:i + 4]) for i in range(0, 32, 4)]
    rcon = 1
    for i in range(8, 60):
        t = list(words[i - 1])
        if i % 8 == 0:
            t = t[1:] + t[:1]
            t = [SBOX[b] for b in t]
            t[0] ^= rcon
            rcon = _xtime(rcon)
        elif i % 8 == 4:
            t = [SBOX[b] for b in t]
        words.append([a ^ b for a, b in zip(words[i - 8], t)])
    # 15 round keys of 16 bytes; byte 4*c + r is row r of column c.
    return [sum(words[4 * r:4 * r + 4], []) for r in range(15)]


def _encrypt_block(round_keys, block):
    s = [b ^ k for b, k in zip(block, round_keys[0])]
    for rnd in range(1, 15):
        s = [SBOX[b] for b in s]
        s = [s[r + 4 * ((c + r) % 4)] for c in range(4) for r in range(4)]
        if rnd != 14:
            m = []
            for c in range(4):
                a0, a1, a2, a3 = s[4 * c:4 * c + 4]
                m += [
                    _gmul(a0, 2) ^ _gmul(a1, 3) ^ a2 ^ a3,
                    a0 ^ _gmul(a1, 2) ^ _gmul(a2, 3) ^ a3,
                    a0 ^ a1 ^ _gmul(a2, 2) ^ _gmul(a3, 3),
                    _gmul(a0, 3) ^ a1 ^ a2 ^ _gmul(a3, 2),
                ]
            s = m
        s = [b ^ k for b, k in zip(s, round_keys[rnd])]
    return bytes(s)


def aes256_cbc_pkcs7_encrypt(key, iv, plaintext):
    rk = _expand_key_256(key)
    n = 16 - len(plaintext) % 16
    data = plaintext + bytes([n]) * n
    out, prev = b"", iv
    for i in range(0, len(data), 16):
        prev = _encrypt_block(rk, bytes(a ^ b for a, b in zip(data[i:i + 16], prev)))
        out += prev
    return out


def _gf128_mul(x, y):
    """Multiplication in GCM's GF(2^128) (SP 800-38D algorithm 1), on
    128-bit integers read big-endian from the blocks."""
    r = 0xE1 << 120
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ r if v & 1 else v >> 1
    return z


def aes256_gmac(key, iv12, aad):
    """AES-256-GCM's tag over `aad` with an empty plaintext (GMAC)."""
    rk = _expand_key_256(key)
    h = int.from_bytes(_encrypt_block(rk, bytes(16)), "big")
    y = 0
    padded = aad + bytes(-len(aad) % 16)
    for i in range(0, len(padded), 16):
        y = _gf128_mul(y ^ int.from_bytes(padded[i:i + 16], "big"), h)
    y = _gf128_mul(y ^ ((len(aad) * 8) << 64), h)
    j0 = iv12 + b"\x00\x00\x00\x01"
    return (y ^ int.from_bytes(_encrypt_block(rk, j0), "big")).to_bytes(16, "big")


# FIPS-197 appendix C.3 (AES-256), so a bug in the AES above cannot hide.
assert _encrypt_block(
    _expand_key_256(bytes(range(32))), bytes.fromhex("00112233445566778899aabbccddeeff")
).hex() == "8ea2b7ca516745bfeafc49904b496089"
# GCM test case 13 (AES-256, zero key, zero IV, empty plaintext, no AAD).
assert aes256_gmac(bytes(32), bytes(12), b"").hex() == "530f8afbc74536b9a963b4f1c4cb738b"
# With a key, an IV and 40 bytes of AAD (three GHASH blocks, one partial),
# as computed by OpenSSL 3 through pyca/cryptography's AESGCM.
assert aes256_gmac(bytes(range(32)), bytes(range(12)), bytes(range(40))).hex() == \
    "e233d5beb911fb5ddcca2a575815a0a7"


# ------------------------------------------------- jsonlink formulas

def transcript_hash(hello, challenge, cb):
    h = hashlib.sha256(b"jsonlink/1 transcript")
    for part in (hello, challenge, cb):
        h.update(struct.pack(">I", len(part)))
        h.update(part)
    return h.digest()


def proof(secret, label, transcript):
    return hmac.new(secret, label + transcript, hashlib.sha256).digest()


def hkdf_sha256(salt, ikm, info, length=32):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


def session_keys(secret, transcript):
    return {
        f"{d}.{p}": hkdf_sha256(transcript, secret, f"jsonlink/1 {d} {p}".encode())
        for d in ("c2s", "s2c")
        for p in ("mac", "enc")
    }


def b64(b):
    return base64.b64encode(b).decode()


def signed_line(mac_key, seq, inner, alg="hmac-sha256"):
    if alg == "hmac-sha256":
        tag = hmac.new(mac_key, b"\x01" + struct.pack(">Q", seq) + inner, hashlib.sha256).digest()
    elif alg == "aes-256-gmac":
        tag = aes256_gmac(mac_key, b"\x01\x00\x00\x00" + struct.pack(">Q", seq), inner)
    else:
        raise SystemExit(f"unknown signing algorithm {alg}")
    return '{"q":%d,"s":"%s","f":%s}' % (seq, b64(tag), inner.decode())


def sealed_line(mac_key, enc_key, seq, iv, inner):
    ct = aes256_cbc_pkcs7_encrypt(enc_key, iv, inner)
    tag = hmac.new(mac_key, b"\x02" + struct.pack(">Q", seq) + iv + ct, hashlib.sha256).digest()
    return '{"q":%d,"iv":"%s","s":"%s","c":"%s"}' % (seq, b64(iv), b64(tag), b64(ct))


# -------------------------------------------------------------- checks

def main():
    v = document_vectors(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DOC)
    checks = 0

    def check(name, got):
        nonlocal checks
        want = v[name]
        if got != want:
            raise SystemExit(f"MISMATCH {name}\n  document: {want}\n  computed: {got}")
        checks += 1

    secret = bytes.fromhex(v["secret"])
    cb = bytes.fromhex(v["channel_binding"])
    assert secret == b"jsonlink test vector secret 0001"
    assert cb == bytes(range(0xA0, 0xC0))

    hello, challenge = v["hello"].encode(), v["challenge"].encode()
    assert base64.b64decode(json.loads(hello)["nonce"], validate=True) == bytes(range(0x00, 0x20))
    assert base64.b64decode(json.loads(challenge)["nonce"], validate=True) == bytes(range(0x20, 0x40))

    th = transcript_hash(hello, challenge, cb)
    check("transcript_hash", th.hex())
    cp = proof(secret, b"jsonlink/1 client proof", th)
    sp = proof(secret, b"jsonlink/1 server proof", th)
    check("client_proof", cp.hex())
    check("client_proof_b64", b64(cp))
    check("server_proof", sp.hex())
    check("server_proof_b64", b64(sp))

    keys = session_keys(secret, th)
    for name, key in keys.items():
        check("key." + name, key.hex())

    check("signed.line", signed_line(keys["c2s.mac"], int(v["signed.seq"]), v["signed.inner"].encode()))
    check("signed_gmac.line", signed_line(keys["c2s.mac"], int(v["signed.seq"]),
                                          v["signed.inner"].encode(), "aes-256-gmac"))
    check("sealed.line", sealed_line(keys["s2c.mac"], keys["s2c.enc"], int(v["sealed.seq"]),
                                     bytes.fromhex(v["sealed.iv"]), v["sealed.inner"].encode()))

    # The full session: proofs in auth/ok, and every later frame signed with
    # the session's keys and numbered from 0 in each direction.
    sth = transcript_hash(v["session.hello"].encode(), v["session.challenge"].encode(), cb)
    check("session.transcript_hash", sth.hex())
    check("session.auth", '{"t":"auth","proof":"%s"}' % b64(proof(secret, b"jsonlink/1 client proof", sth)))
    check("session.ok", '{"t":"ok","proof":"%s"}' % b64(proof(secret, b"jsonlink/1 server proof", sth)))
    skeys = session_keys(secret, sth)
    # The algorithm the server chose, one the client offered.
    alg = json.loads(v["session.challenge"])["sign_alg"]
    offered = json.loads(v["session.hello"])["sign_alg"]
    assert alg in (offered if isinstance(offered, list) else [offered]), (alg, offered)
    tag_b64 = {"hmac-sha256": 44, "aes-256-gmac": 24}[alg]
    for d in ("c2s", "s2c"):
        i = 0
        while f"session.{d}.{i}" in v:
            line = v[f"session.{d}.{i}"]
            prefix = '{"q":%d,"s":"' % i
            assert line.startswith(prefix) and line.endswith("}"), line
            inner = line[len(prefix) + tag_b64 + len('","f":'):-1].encode()
            check(f"session.{d}.{i}", signed_line(skeys[f"{d}.mac"], i, inner, alg))
            json.loads(inner)
            i += 1
        assert i > 0, d

    # The extension sessions: proofs over the lines shown, an acceptance the
    # client offered, and the answer's code as the agreement calls for.
    for case, accepted in (("ext_accepted", True), ("ext_declined", False)):
        h, c = v[f"{case}.hello"].encode(), v[f"{case}.challenge"].encode()
        th = transcript_hash(h, c, cb)
        check(f"{case}.transcript_hash", th.hex())
        check(f"{case}.auth", '{"t":"auth","proof":"%s"}' % b64(proof(secret, b"jsonlink/1 client proof", th)))
        check(f"{case}.ok", '{"t":"ok","proof":"%s"}' % b64(proof(secret, b"jsonlink/1 server proof", th)))
        offered = json.loads(h).get("ext", [])
        taken = json.loads(c).get("ext", [])
        assert set(taken) <= set(offered), (taken, offered)
        assert ("response_too_large" in taken) == accepted, taken
        res = json.loads(v[f"{case}.res"])
        code = res["err"]["code"]
        assert code == ("response_too_large" if accepted else "internal"), code
        assert ("data" in res["err"]) == accepted, res

    # The relay session: proofs keyed with the relay secret (never the
    # client secret), the relay role offered and accepted, and relayed
    # frames each naming a client by a u64 id, joins in increasing order.
    rsecret = bytes.fromhex(v["relay.secret"])
    assert rsecret == b"jsonlink test vector relay 00001", rsecret
    assert rsecret != secret
    h, c = v["relay.hello"].encode(), v["relay.challenge"].encode()
    rth = transcript_hash(h, c, cb)
    check("relay.transcript_hash", rth.hex())
    check("relay.auth", '{"t":"auth","proof":"%s"}' % b64(proof(rsecret, b"jsonlink/1 client proof", rth)))
    check("relay.ok", '{"t":"ok","proof":"%s"}' % b64(proof(rsecret, b"jsonlink/1 server proof", rth)))
    assert "relay" in json.loads(h)["ext"] and "relay" in json.loads(c)["ext"]
    joined = []
    for d, kinds in (("c2s", {"join", "leave", "cmsg", "creq", "cres"}), ("s2c", {"leave", "cmsg", "creq", "cres"})):
        i = 0
        while f"relay.{d}.{i}" in v:
            f = json.loads(v[f"relay.{d}.{i}"])
            assert f["t"] in kinds, (d, i, f)
            assert isinstance(f["c"], int) and 0 <= f["c"] < 2**64, f
            if f["t"] == "join":
                assert not joined or f["c"] > joined[-1], "join ids increase"
                assert len(f["addr"].encode()) <= 64 and f["max_frame"] >= 512
                joined.append(f["c"])
            else:
                assert f["c"] <= max(joined), "a client joined before"
            i += 1
        assert i > 0, d

    print(f"all {checks} checks passed")


if __name__ == "__main__":
    main()
