#!/usr/bin/env bash
# The mirror is read by real engines with their default settings: syncs a mix
# of the emulator's tables (every period form, missing values, zero-row
# periods) with the debug binaries, then runs tests/readers/check.py (Spark
# 3.5, DuckDB, Polars, pyarrow, pandas) over every partition.
#
#   .ci/readers.sh            # after `cargo build --workspace`
#   STATBANK_BIN_DIR=target/release .ci/readers.sh
#
# The Python packages go into a cached venv (STATBANK_CI_CACHE, else
# ~/.cache/statbank-ci); Spark needs Java 17 (apt's default-jre-headless
# when there is no java).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${STATBANK_BIN_DIR:-$repo/target/debug}
cache=${STATBANK_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/statbank-ci}
req=$repo/tests/readers/requirements.txt
key=$(sha256sum "$req" | cut -c1-12)
venv=$cache/readers-$key

if ! command -v java >/dev/null; then
    apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null
fi
if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    touch "$venv/.complete"
fi

tmp=$(mktemp -d)
emu_pid=""
cleanup() {
    [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

"$bin_dir/statbank-emulator" --port 0 --bind 127.0.0.1 >"$tmp/emulator.log" 2>&1 &
emu_pid=$!
base_url=""
for _ in $(seq 1 50); do
    base_url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$tmp/emulator.log" | head -n 1)
    [ -n "$base_url" ] && break
    sleep 0.2
done
if [ -z "$base_url" ]; then
    echo "readers: statbank-emulator did not start" >&2
    cat "$tmp/emulator.log" >&2
    exit 1
fi

tables=FOLK1A,BIL10,METROX1,FOLK1AM,DNVALD,KORN2,SCENE01A,HISB7,BARLOV1,UGEINT1
"$bin_dir/statbank-sync" --data-dir "$tmp/data" --base-url "$base_url" \
    --tables "$tables" --force-catalog-poll >"$tmp/sync.log" 2>&1 || {
    echo "readers: statbank-sync failed" >&2
    cat "$tmp/sync.log" >&2
    exit 1
}
"$venv/bin/python" "$repo/tests/readers/check.py" "$tmp/data/statbank_tables"
