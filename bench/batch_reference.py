"""The batch's three aggregations computed by DuckDB and by Polars, for `auth bench batch`.

Usage: batch_reference.py <master data directory> <YYYY-MM-DD>

Reads the same Parquet files as the batch (readings/utility=<u>/date=<d>/*.parquet),
keeps the first copy of a repeated reading (same meter and event time, lowest
log offset), sums each customer's usage per UTC hour once, and derives from
those sums: daily usage per customer and utility (with the peak hour, the
earliest of equal ones), hourly usage per region and utility, and the top 10
customers per region and utility. Prints one JSON object: per engine the
seconds the three took (files read to results in memory), its peak memory,
and fingerprints of the results for `auth bench batch` to compare with its own.
"""

import json
import resource
import sys
import time

import duckdb
import polars as pl


def fingerprint(daily, region_hours, top):
    """daily: (utility, customer, total, readings, peak hour); region_hours: (utility, region, hour, total, readings, customers); top: (utility, region, position, customer, total)."""
    return {
        "customer_days": len(daily),
        "customer_total": sum(row[2] for row in daily),
        "customer_readings": sum(row[3] for row in daily),
        "peak_hours": sum(row[4] for row in daily),
        "region_hours": sorted([list(row) for row in region_hours]),
        "top": sorted([list(row) for row in top]),
    }


def with_duckdb(folder, date):
    started = time.perf_counter()
    db = duckdb.connect()
    db.execute(f"""
        CREATE TEMP TABLE hours AS
        WITH readings AS (
            SELECT utility, customer_id, region, meter_id, ts, value, log_offset
            FROM read_parquet('{folder}/readings/utility=*/date={date}/*.parquet', hive_partitioning = true)
        ), unique_readings AS (
            SELECT utility, customer_id, region, meter_id, ts, arg_min(value, log_offset) AS value
            FROM readings GROUP BY utility, customer_id, region, meter_id, ts
        )
        SELECT utility, customer_id, CAST(region AS VARCHAR) AS region, hour(ts) AS hour,
               sum(value) AS total, min(value) AS min_value, max(value) AS max_value, count(*) AS readings
        FROM unique_readings GROUP BY utility, customer_id, region, hour(ts)""")
    daily = db.execute("""
        CREATE TEMP TABLE daily AS
        SELECT utility, customer_id, first(region) AS region, sum(total) AS total, min(min_value) AS min_value,
               max(max_value) AS max_value, sum(readings) AS readings,
               first(hour ORDER BY total DESC, hour ASC) AS peak_hour
        FROM hours GROUP BY utility, customer_id""")
    daily = db.execute("SELECT utility, customer_id, total, readings, peak_hour FROM daily").fetchall()
    region_hours = db.execute("""
        SELECT utility, region, hour, sum(total), sum(readings), count(*) FROM hours
        GROUP BY utility, region, hour""").fetchall()
    top = db.execute("""
        SELECT utility, region, position, customer_id, total FROM (
            SELECT utility, region, customer_id, total,
                   row_number() OVER (PARTITION BY utility, region ORDER BY total DESC, customer_id) AS position
            FROM daily) WHERE position <= 10""").fetchall()
    seconds = time.perf_counter() - started
    return seconds, fingerprint(daily, region_hours, top)


def with_polars(folder, date):
    started = time.perf_counter()
    readings = pl.scan_parquet(f"{folder}/readings/utility=*/date={date}/*.parquet", hive_partitioning=True)
    hours = (
        readings.sort("log_offset")
        .group_by(["utility", "customer_id", "region", "meter_id", "ts"])
        .agg(pl.col("value").first())
        .with_columns(pl.col("ts").dt.hour().cast(pl.Int64).alias("hour"), pl.col("region").cast(pl.Utf8))
        .group_by(["utility", "customer_id", "region", "hour"])
        .agg(
            pl.col("value").sum().alias("total"),
            pl.col("value").min().alias("min_value"),
            pl.col("value").max().alias("max_value"),
            pl.len().alias("readings"),
        )
        .collect()
    )
    daily = (
        hours.sort(["total", "hour"], descending=[True, False])
        .group_by(["utility", "customer_id"])
        .agg(
            pl.col("region").first(),
            pl.col("total").sum(),
            pl.col("min_value").min(),
            pl.col("max_value").max(),
            pl.col("readings").sum(),
            pl.col("hour").first().alias("peak_hour"),
        )
    )
    region_hours = hours.group_by(["utility", "region", "hour"]).agg(
        pl.col("total").sum(), pl.col("readings").sum(), pl.len().alias("customers")
    )
    top = (
        daily.sort(["total", "customer_id"], descending=[True, False])
        .group_by(["utility", "region"], maintain_order=True)
        .head(10)
        .with_columns((pl.int_range(pl.len()).over(["utility", "region"]) + 1).alias("position"))
    )
    seconds = time.perf_counter() - started
    return seconds, fingerprint(
        daily.select(["utility", "customer_id", "total", "readings", "peak_hour"]).rows(),
        region_hours.select(["utility", "region", "hour", "total", "readings", "customers"]).rows(),
        top.select(["utility", "region", "position", "customer_id", "total"]).rows(),
    )


def main():
    folder, date = sys.argv[1], sys.argv[2]
    engine = sys.argv[3] if len(sys.argv) > 3 else "both"
    out = {}
    if engine in ("duckdb", "both"):
        seconds, result = with_duckdb(folder, date)
        out["duckdb"] = {"seconds": seconds, "result": result, "version": duckdb.__version__}
    if engine in ("polars", "both"):
        seconds, result = with_polars(folder, date)
        out["polars"] = {"seconds": seconds, "result": result, "version": pl.__version__}
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
