#!/usr/bin/env python3
"""The strongest embedded engine a user would script instead, for timing side
by side with statbank-sync: stream the BULK body to a temp file, read it with
DuckDB's parallel CSV reader (decimal comma, '..' as null, codes as strings),
`COPY ... PARTITION_BY (TID)` to zstd Parquet, and rename one file per period
into place.

Usage: duckdb_sync.py BASE_URL TABLE OUT_DIR   (prints "<rows> rows")
"""
import glob
import os
import shutil
import sys
import tempfile
from urllib.parse import quote, unquote

import duckdb
import httpx


def main(base: str, table: str, out: str) -> None:
    info = httpx.get(f"{base}/tableinfo", params={"id": table, "format": "JSON", "lang": "da"},
                     timeout=600).json()
    codes = [v["id"].upper() for v in info["variables"]]
    body = {
        "table": table, "format": "BULK", "lang": "da", "valuePresentation": "Code",
        "variables": [{"code": v["id"], "values": ["*"]} for v in info["variables"]],
    }
    with tempfile.NamedTemporaryFile(delete=False, suffix=".csv") as f:
        with httpx.stream("POST", f"{base}/data", json=body, timeout=3600) as resp:
            resp.raise_for_status()
            for block in resp.iter_bytes(1 << 20):
                f.write(block)
    os.makedirs(out, exist_ok=True)
    stage = tempfile.mkdtemp(dir=out)
    types = ", ".join(f"'{c}': 'VARCHAR'" for c in codes) + ", 'INDHOLD': 'DOUBLE'"
    con = duckdb.connect()
    con.sql(
        f"COPY (SELECT * FROM read_csv('{f.name}', delim=';', header=true, decimal_separator=',', "
        f"nullstr='..', types={{{types}}})) TO '{stage}' (FORMAT parquet, COMPRESSION zstd, "
        f"PARTITION_BY (TID), WRITE_PARTITION_COLUMNS true)")
    os.unlink(f.name)
    folder = os.path.join(out, table)
    os.makedirs(folder, exist_ok=True)
    rows = 0
    for d in glob.glob(os.path.join(stage, "TID=*")):
        tid = unquote(os.path.basename(d)[len("TID="):])
        (path,) = glob.glob(os.path.join(d, "*.parquet"))
        rows += con.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()[0]
        os.replace(path, os.path.join(folder, quote(tid, safe="") + ".parquet"))
    shutil.rmtree(stage)
    print(rows, "rows")


if __name__ == "__main__":
    main(*sys.argv[1:4])
