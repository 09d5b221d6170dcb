#!/usr/bin/env bash
# Checks that the published crates build with the declared MSRV (the root
# Cargo.toml's `rust-version`), with that toolchain (installed by rustup,
# minimal profile, if missing). Libraries and examples only; tests and
# benches may use newer dev-dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -1)
[ -n "$msrv" ] || { echo "no rust-version in Cargo.toml" >&2; exit 1; }
echo "== MSRV $msrv: the published crates"
rustup toolchain list | grep -q "^$msrv" || rustup toolchain install "$msrv" --profile minimal
cargo "+$msrv" check --locked --target-dir target/msrv \
    -p jsonlink-proto -p jsonlink-rt -p jsonlink-tokio -p jsonlink-async-std -p jsonlink-smol -p jsonlink-rpc -p jsonlink-gateway --lib
