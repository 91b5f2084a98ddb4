#!/usr/bin/env python3
"""What the original Python system does to apply changed periods into
Postgres, for timing side by side with statbank-apply: read the changed
partitions with pandas, lower-case the column names, turn quarters into dates,
drop rows without a value, then in one transaction: a temp table like the
target, CSV COPY into it, DELETE the periods comparing tid as text, INSERT.

Usage: original_apply.py DSN TABLES_DIR TABLE TID...
       (TABLES_DIR holds <TABLE>/<tid>.parquet; prints "<n> deleted <m> inserted")
"""
import io
import sys
import uuid
from urllib.parse import quote

import pandas as pd
import psycopg


def quarter_start(codes: pd.Series) -> pd.Series:
    return pd.to_datetime(codes.str.replace("K", "Q"))


def main(dsn: str, tables: str, table: str, tids: list) -> None:
    frame = pd.concat(
        [pd.read_parquet(f"{tables}/{table}/{quote(t, safe='')}.parquet") for t in tids],
        ignore_index=True,
    )
    frame.columns = [c.lower().replace("å", "a").replace("ø", "o").replace("æ", "ae")
                     for c in frame.columns]
    frame["tid"] = quarter_start(frame["tid"].astype(str)).dt.date
    frame = frame[frame["indhold"].notna()]
    periods = [str(d) for d in quarter_start(pd.Series(tids)).dt.date]
    target = f'fact."{table.lower()}"'
    temp = f"tmp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f'CREATE TEMP TABLE "{temp}" AS TABLE {target} WITH NO DATA')
        csv = io.StringIO()
        frame.to_csv(csv, index=False, header=False, na_rep="\\N")
        columns = ", ".join(f'"{c}"' for c in frame.columns)
        with cur.copy(f'COPY "{temp}" ({columns}) FROM STDIN WITH (FORMAT CSV, NULL \'\\N\')') as cp:
            cp.write(csv.getvalue())
        cur.execute(f"DELETE FROM {target} AS t USING (SELECT unnest(%s::text[]) AS tid) AS s "
                    "WHERE t.tid::text = s.tid", (periods,))
        deleted = cur.rowcount
        cur.execute(f'INSERT INTO {target} SELECT * FROM "{temp}"')
        print(deleted, "deleted", cur.rowcount, "inserted")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
