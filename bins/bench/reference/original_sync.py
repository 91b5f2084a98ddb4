#!/usr/bin/env python3
"""What the original Python system does to bootstrap a table, for timing side
by side with statbank-sync: fetch every period in one BULK request, read the
whole body with pandas (';' separated, decimal comma), split it by TID and
write one Parquet file per period (temp file, then rename).

Usage: original_sync.py BASE_URL TABLE OUT_DIR   (prints "<rows> rows")
"""
import io
import os
import sys
import uuid
from urllib.parse import quote

import httpx
import pandas as pd


def main(base: str, table: str, out: str) -> None:
    info = httpx.get(f"{base}/tableinfo", params={"id": table, "format": "JSON", "lang": "da"},
                     timeout=600).json()
    body = {
        "table": table, "format": "BULK", "lang": "da", "valuePresentation": "Code",
        "variables": [{"code": v["id"], "values": ["*"]} for v in info["variables"]],
    }
    resp = httpx.post(f"{base}/data", json=body, timeout=3600)
    resp.raise_for_status()
    frame = pd.read_csv(io.StringIO(resp.text), sep=";", decimal=",", low_memory=False)
    folder = os.path.join(out, table)
    os.makedirs(folder, exist_ok=True)
    rows = 0
    for tid, part in frame.groupby("TID", sort=False):
        final = os.path.join(folder, quote(str(tid), safe="") + ".parquet")
        temp = f"{final}.{uuid.uuid4().hex}.tmp"
        part.to_parquet(temp)
        os.replace(temp, final)
        rows += len(part)
    print(rows, "rows")


if __name__ == "__main__":
    main(*sys.argv[1:4])
