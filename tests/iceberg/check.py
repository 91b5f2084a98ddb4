"""Reads the mirror's Iceberg tables with pyiceberg and DuckDB's iceberg
extension and compares them with `statbank-inspect asof`.

    check.py CASES.json

CASES.json (written by tests/it/iceberg.rs):
    {"tables": {"QTR": "<metadata folder of the table>", ...},
     "storage": {"s3.endpoint": ..., ...} (optional: an S3 server),
     "cases": [{"table": "QTR", "at_ms": 1767..., "expected": "<asof parquet>"}, ...]}

Asserts, for every case: the snapshot as of the instant, read by pyiceberg
and by DuckDB, has exactly the rows of the asof file (an instant before the
first snapshot: the asof file is empty); for every table: a filter on one
period plans exactly one file; every file referenced by any snapshot exists
with its recorded size. Prints one line per table; exits 1 listing every
failure.
"""

import glob
import json
import math
import os
import sys
import sysconfig

import duckdb
import pyarrow.parquet as pq
from pyiceberg.expressions import EqualTo
from pyiceberg.table import StaticTable


def rows_of(arrow):
    cols = sorted(arrow.column_names)
    data = [arrow.column(c).to_pylist() for c in cols]
    out = []
    for r in zip(*data):
        out.append(tuple("NULL" if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in r))
    return cols, sorted(out, key=repr)


def duckdb_connection(storage):
    con = duckdb.connect()
    site = sysconfig.get_paths()["purelib"]
    for name in ["avro", "iceberg", "httpfs"]:
        found = glob.glob(os.path.join(site, f"duckdb_extension_{name}", "extensions", "*", "*.duckdb_extension"))
        if not found:
            raise SystemExit(f"duckdb extension {name} is not installed")
        con.execute(f"LOAD '{found[0]}'")
    if storage:
        endpoint = storage["s3.endpoint"].split("://", 1)[1]
        con.execute(
            "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, ENDPOINT ?, URL_STYLE 'path', USE_SSL false, REGION ?)",
            [storage["s3.access-key-id"], storage["s3.secret-access-key"], endpoint, storage.get("s3.region", "us-east-1")],
        )
    return con


def metadata_file(folder, storage):
    """The current metadata file, as version-hint.text names it."""
    hint = f"{folder}/version-hint.text"
    if storage:
        from pyiceberg.io.pyarrow import PyArrowFileIO
        io = PyArrowFileIO(storage)
        with io.new_input(hint).open() as f:
            n = f.read().decode().strip()
    else:
        with open(hint) as f:
            n = f.read().strip()
    return f"{folder}/v{n}.metadata.json"


def file_sizes_ok(tab, failures, name):
    io = tab.io
    for snap in tab.metadata.snapshots:
        for manifest in snap.manifests(io):
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                df = entry.data_file
                try:
                    size = len(io.new_input(df.file_path))
                except Exception as e:  # noqa: BLE001 - the finding
                    failures.append(f"{name}: snapshot {snap.snapshot_id} references {df.file_path}, which cannot be opened: {e}")
                    continue
                if size != df.file_size_in_bytes:
                    failures.append(f"{name}: {df.file_path} is {size} bytes, the manifest says {df.file_size_in_bytes}")


def main():
    spec = json.load(open(sys.argv[1]))
    storage = spec.get("storage") or {}
    con = duckdb_connection(storage)
    failures = []
    tables = {}
    for name, folder in spec["tables"].items():
        meta = metadata_file(folder, storage)
        tab = StaticTable.from_metadata(meta, properties=storage)
        tables[name] = (tab, meta)
        file_sizes_ok(tab, failures, name)
        current = tab.scan().to_arrow()
        tids = sorted(set(current.column("TID").to_pylist()))
        for tid in tids:
            planned = list(tab.scan(row_filter=EqualTo("TID", tid)).plan_files())
            if len(planned) != 1:
                failures.append(f"{name}: a filter on TID = {tid!r} plans {len(planned)} files, not 1")
        print(f"{name}: {len(tab.metadata.snapshots)} snapshots, {current.num_rows} rows now, {len(tids)} periods with rows")
    for case in spec["cases"]:
        name, at_ms = case["table"], case["at_ms"]
        tab, meta = tables[name]
        expected = pq.read_table(case["expected"])
        want_cols, want = rows_of(expected)
        snap = tab.snapshot_as_of_timestamp(at_ms)
        where = f"{name} as of {case.get('at', at_ms)}"
        if snap is None:
            if want:
                failures.append(f"{where}: no snapshot, but asof has {len(want)} rows")
            continue
        got_cols, got = rows_of(tab.scan(snapshot_id=snap.snapshot_id).to_arrow())
        if (got_cols, got) != (want_cols, want):
            failures.append(f"{where}: pyiceberg reads {len(got)} rows {got_cols}, asof {len(want)} rows {want_cols}")
        arrow = con.execute(
            "SELECT * FROM iceberg_scan(?, snapshot_from_timestamp => make_timestamp(?::BIGINT * 1000))",
            [meta, at_ms],
        ).to_arrow_table()
        d_cols, d_rows = rows_of(arrow)
        if (d_cols, d_rows) != (want_cols, want):
            failures.append(f"{where}: DuckDB reads {len(d_rows)} rows {d_cols}, asof {len(want)} rows {want_cols}")
    print(f"{len(spec['cases'])} instants compared with statbank-inspect asof")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
