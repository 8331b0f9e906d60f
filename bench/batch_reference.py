"""The batch's three aggregations computed by DuckDB and by Polars, for `auth bench batch`.

Usage: batch_reference.py <master data directory> <YYYY-MM-DD,...> <engine> <local days JSON>

Reads the same Parquet files as the batch (readings/utility=<u>/date=<d>/*.parquet
of each date given: the UTC date folders that hold the local day), keeps each
region's readings of its local day (the JSON maps a region code to the day's
[start, end) in UTC ms), keeps the first copy of a repeated reading (same
meter and event time, lowest log offset), sums each customer's usage per hour
of its local day (counted from local midnight) once, and derives from
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


def globs(folder, dates):
    return [f"{folder}/readings/utility=*/date={date}/*.parquet" for date in dates]


def with_duckdb(folder, dates, days):
    started = time.perf_counter()
    db = duckdb.connect()
    db.execute("CREATE TEMP TABLE days (region VARCHAR, day_start BIGINT, day_end BIGINT)")
    db.executemany("INSERT INTO days VALUES (?, ?, ?)", [(code, start, end) for code, (start, end) in days.items()])
    db.execute(f"""
        CREATE TEMP TABLE hours AS
        WITH readings AS (
            SELECT utility, customer_id, CAST(r.region AS VARCHAR) AS region, meter_id, epoch_ms(ts) AS ts_ms, value, log_offset, day_start
            FROM read_parquet({globs(folder, dates)}, hive_partitioning = true) r
            JOIN days d ON CAST(r.region AS VARCHAR) = d.region
            WHERE epoch_ms(ts) >= day_start AND epoch_ms(ts) < day_end
        ), unique_readings AS (
            SELECT utility, customer_id, region, meter_id, ts_ms, any_value(day_start) AS day_start, arg_min(value, log_offset) AS value
            FROM readings GROUP BY utility, customer_id, region, meter_id, ts_ms
        )
        SELECT utility, customer_id, region, (ts_ms - day_start) // 3600000 AS hour,
               sum(value) AS total, min(value) AS min_value, max(value) AS max_value, count(*) AS readings
        FROM unique_readings GROUP BY utility, customer_id, region, (ts_ms - day_start) // 3600000""")
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


def with_polars(folder, dates, days):
    started = time.perf_counter()
    day_table = pl.LazyFrame(
        {"region": list(days), "day_start": [start for start, _ in days.values()], "day_end": [end for _, end in days.values()]}
    )
    readings = (
        pl.scan_parquet(globs(folder, dates), hive_partitioning=True)
        .with_columns(pl.col("region").cast(pl.Utf8), pl.col("ts").dt.epoch("ms").alias("ts_ms"))
        .join(day_table, on="region")
        .filter((pl.col("ts_ms") >= pl.col("day_start")) & (pl.col("ts_ms") < pl.col("day_end")))
    )
    hours = (
        readings.sort("log_offset")
        .group_by(["utility", "customer_id", "region", "meter_id", "ts_ms"])
        .agg(pl.col("value").first(), pl.col("day_start").first())
        .with_columns(((pl.col("ts_ms") - pl.col("day_start")) // 3_600_000).cast(pl.Int64).alias("hour"))
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
    folder, dates, engine, days = sys.argv[1], sys.argv[2].split(","), sys.argv[3], json.loads(sys.argv[4])
    out = {}
    if engine in ("duckdb", "both"):
        seconds, result = with_duckdb(folder, dates, days)
        out["duckdb"] = {"seconds": seconds, "result": result, "version": duckdb.__version__}
    if engine in ("polars", "both"):
        seconds, result = with_polars(folder, dates, days)
        out["polars"] = {"seconds": seconds, "result": result, "version": pl.__version__}
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
