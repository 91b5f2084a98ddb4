"""Every engine reads every partition of the mirror with its default settings.

    python tests/readers/check.py <data-dir>/statbank_tables

For each table folder, each engine reads the table's partition files (the
`<TID>.parquet` files; `_sync`, vintages and temp files are not partitions)
and computes per file: rows, non-null `INDHOLD` and the sum of `INDHOLD`.
Every engine must agree with the row count the writer put in the footer
(`statbank_sync.rows`) and with the others. Engines: Apache Spark (default
session settings, so its vectorized Parquet reader), DuckDB, Polars,
pyarrow and pandas. Each table's labels file (`metadata/labels/<T>.parquet`)
must join its partitions in DuckDB, Polars and pandas with one label per
row of every code column, in Danish and English. Exit 0 when all agree, 1
otherwise.
"""

import math
import os
import sys
from pathlib import Path
from urllib.parse import unquote

import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq

ROWS_KEY = b"statbank_sync.rows"


def partitions(table_dir):
    return sorted(
        p for p in table_dir.iterdir()
        if p.is_file() and p.suffix == ".parquet" and not p.name.startswith(".")
    )


def footer_counts(files):
    out = {}
    for f in files:
        meta = pq.read_metadata(f).metadata or {}
        if ROWS_KEY not in meta:
            raise SystemExit(f"{f}: no {ROWS_KEY.decode()} in the footer")
        out[f.name] = int(meta[ROWS_KEY])
    return out


def summary(rows, nonnull, total):
    return (int(rows), int(nonnull), float(total or 0.0))


def by_pyarrow(files):
    out = {}
    for f in files:
        t = pq.read_table(f)
        col = t.column("INDHOLD")
        total = sum(v for v in col.to_pylist() if v is not None)
        out[f.name] = summary(t.num_rows, t.num_rows - col.null_count, total)
    return out


def by_pandas(files):
    out = {}
    for f in files:
        df = pd.read_parquet(f)
        out[f.name] = summary(len(df), df["INDHOLD"].count(), df["INDHOLD"].sum())
    return out


def by_polars(files):
    out = {}
    for f in files:
        df = pl.read_parquet(f)
        col = df["INDHOLD"]
        out[f.name] = summary(df.height, col.len() - col.null_count(), col.sum())
    return out


def by_duckdb(table_dir):
    con = duckdb.connect()
    rows = con.execute(
        "select filename, count(*), count(INDHOLD), sum(INDHOLD) "
        "from read_parquet(?, filename = true) group by filename",
        [str(table_dir / "*.parquet")],
    ).fetchall()
    return {Path(name).name: summary(n, nn, s) for name, n, nn, s in rows}


def by_spark(spark, table_dir):
    from pyspark.sql import functions as F

    df = spark.read.parquet(str(table_dir / "*.parquet"))
    rows = (
        df.withColumn("file", F.input_file_name())
        .groupBy("file")
        .agg(F.count(F.lit(1)), F.count("INDHOLD"), F.sum("INDHOLD"))
        .collect()
    )
    # input_file_name() is a URI: the file name's own `%` escapes arrive
    # escaped once more (`%253A` for the `%3A` of `2008%3A2009.parquet`).
    return {unquote(Path(r[0]).name): summary(r[1], r[2], r[3]) for r in rows}


def labels_failures(root, table, files):
    """The table's labels file (`metadata/labels/<T>.parquet`) joins its
    partitions: in DuckDB (Danish) and Polars and pandas (English), every
    row of every code column gets exactly one label."""
    lab = root.parent / "metadata" / "labels" / f"{table}.parquet"
    if not lab.exists():
        return [f"{table}: no labels file at {lab}"]
    langs = set(pq.read_table(lab, columns=["lang"]).column("lang").to_pylist())
    if langs != {"da", "en"}:
        return [f"{table}: labels in {sorted(langs)}, not da and en"]
    glob = str(files[0].parent / "*.parquet")
    total = sum(pq.read_metadata(f).num_rows for f in files)
    codes = [c for c in pq.read_schema(files[0]).names if c != "INDHOLD"]
    out = []
    con = duckdb.connect()
    labels_pl = pl.read_parquet(lab)
    labels_pd = pd.read_parquet(lab)
    facts_pd = pd.concat([pd.read_parquet(f) for f in files])
    for col in codes:
        rows, unlabeled = con.execute(
            f'select count(*), count(*) filter (where l.label is null) from read_parquet(?) f '
            f'left join (select code, label from read_parquet(?) where upper(variable_id) = ? '
            f"and lang = 'da') l on l.code = f.\"{col}\"",
            [glob, str(lab), col],
        ).fetchone()
        if rows != total or unlabeled:
            out.append(f"{table}.{col}: duckdb joined {rows} rows of {total}, {unlabeled} without a label")
        en = labels_pl.filter((pl.col("variable_id").str.to_uppercase() == col) & (pl.col("lang") == "en"))
        joined = pl.scan_parquet(glob).join(
            en.lazy().select(pl.col("code").alias(col), "label"), on=col, how="left").collect()
        if joined.height != total or joined["label"].null_count():
            out.append(f"{table}.{col}: polars joined {joined.height} rows of {total}, "
                       f"{joined['label'].null_count()} without an English label")
        en_pd = labels_pd[(labels_pd.variable_id.str.upper() == col) & (labels_pd.lang == "en")]
        merged = facts_pd.merge(en_pd[["code", "label"]].rename(columns={"code": col}), on=col, how="left")
        if len(merged) != total or merged["label"].isna().any():
            out.append(f"{table}.{col}: pandas merged {len(merged)} rows of {total}")
    return out


def cause(error):
    """The line of an engine's error that says why (Spark's is deep in a Java trace)."""
    lines = [l.strip() for l in str(error).splitlines() if l.strip()]
    for line in lines:
        if "Caused by:" in line or "Unsupported" in line:
            return line
    return lines[0] if lines else type(error).__name__


def same(a, b):
    return a[0] == b[0] and a[1] == b[1] and math.isclose(a[2], b[2], rel_tol=1e-9, abs_tol=1e-9)


def start_spark():
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("statbank-readers-check")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    vectorized = spark.conf.get("spark.sql.parquet.enableVectorizedReader")
    if vectorized != "true":
        raise SystemExit(f"spark: the vectorized reader is {vectorized}, not the default")
    return spark


def main():
    root = Path(sys.argv[1])
    tables = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    if not tables:
        raise SystemExit(f"{root}: no table folders")
    spark = start_spark()
    failures, files_checked = [], 0
    for table_dir in tables:
        files = partitions(table_dir)
        if not files:
            continue
        files_checked += len(files)
        expected = footer_counts(files)
        engines = {
            "pyarrow": lambda: by_pyarrow(files),
            "pandas": lambda: by_pandas(files),
            "polars": lambda: by_polars(files),
            "duckdb": lambda: by_duckdb(table_dir),
            "spark": lambda: by_spark(spark, table_dir),
        }
        results = {}
        for name, read in engines.items():
            try:
                results[name] = read()
            except Exception as e:  # the engine's own error is the finding
                failures.append(f"{table_dir.name}: {name} cannot read it: {cause(e)}")
        base = results.get("pyarrow")
        for name, got in results.items():
            for file, rows in expected.items():
                # DuckDB and Spark see a zero-row file as no group at all.
                seen = got.get(file, (0, 0, 0.0))
                if seen[0] != rows:
                    failures.append(f"{table_dir.name}/{file}: {name} read {seen[0]} rows, the footer says {rows}")
                elif base and file in base and not same(seen, base[file]):
                    failures.append(f"{table_dir.name}/{file}: {name} gives {seen}, pyarrow {base[file]}")
        failures.extend(labels_failures(root, table_dir.name, files))
        print(f"{table_dir.name}: {len(files)} partitions, {sum(expected.values())} rows, "
              f"read by {', '.join(sorted(results))}; labels joined")
    spark.stop()
    for f in failures:
        print("FAIL", f)
    versions = (f"spark {__import__('pyspark').__version__}, duckdb {duckdb.__version__}, "
                f"polars {pl.__version__}, pyarrow {__import__('pyarrow').__version__}, "
                f"pandas {pd.__version__}")
    print(f"{files_checked} partition files of {len(tables)} tables; {versions}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    main()
