#!/usr/bin/env bash
# Checks the deploy/ folder with the real tools: runs .ci/deploy-integration.sh
# (Prefect server + served deployment + runs against the StatBank emulator and
# Postgres, promtool, a real Prometheus, kubernetes-validate, systemd-analyze,
# hadolint). There is no offline or stand-in mode.
#
#   deploy/check.sh                       # builds the binaries (debug) first
#   STATBANK_BIN_DIR=target/release deploy/check.sh
#
# Without STATBANK_BIN_DIR it runs `cargo build --workspace --all-targets` and
# uses target/debug. That command resolves features exactly as `cargo test
# --workspace` does (the `tests` crate turns on `emulator` and the inert
# `test-hooks`), so after the tests it only links the five binaries instead
# of compiling every dependency a second time with other features (7 minutes
# of CI). Without cargo: target/release or else target/debug as found.
# Needs root on Debian/Ubuntu the first time (apt-get, pip into a cached
# venv); see deploy/README.md, "Checking these files".
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bins=(statbank-sync statbank-apply statbank-flow statbank-inspect statbank-emulator)

complete() {
    local b
    for b in "${bins[@]}"; do [ -x "$1/$b" ] || return 1; done
}

if [ -z "${STATBANK_BIN_DIR:-}" ]; then
    if command -v cargo >/dev/null && [ -f "$repo/Cargo.toml" ]; then
        # Always current with the source (a no-op when nothing changed).
        echo "deploy/check.sh: cargo build --workspace --all-targets"
        (cd "$repo" && cargo build --workspace --all-targets)
        STATBANK_BIN_DIR=$repo/target/debug
    elif complete "$repo/target/release"; then
        STATBANK_BIN_DIR=$repo/target/release
    elif complete "$repo/target/debug"; then
        STATBANK_BIN_DIR=$repo/target/debug
    else
        echo "deploy/check.sh: no cargo and no binaries in target/release or target/debug; set STATBANK_BIN_DIR" >&2
        exit 1
    fi
fi
export STATBANK_BIN_DIR
echo "deploy/check.sh: binaries from $STATBANK_BIN_DIR"
exec "$repo/.ci/deploy-integration.sh"
