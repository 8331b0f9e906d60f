//! Where a reading's file lives.

use auth_core::Utility;
use chrono::{DateTime, NaiveDate};
use object_store::path::Path;

use crate::READINGS_DIR;

/// A UTC day in ms: master data is laid out by the event time's date.
pub const DAY_MS: i64 = 86_400_000;

/// The UTC date of an event time.
pub fn date_of(ts_ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(ts_ms.div_euclid(DAY_MS) * DAY_MS)
        .map(|time| time.date_naive())
        .unwrap_or(NaiveDate::MIN)
}

/// Midnight UTC of a date, in ms.
pub fn day_start_ms(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0).map(|time| time.and_utc().timestamp_millis()).unwrap_or(i64::MIN)
}

/// Reads `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<NaiveDate, chrono::ParseError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
}

/// The dates in `[from, to]`.
pub fn dates(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    from.iter_days().take_while(|date| *date <= to).collect()
}

/// The folder of one utility's readings on one date, relative to the store's root.
pub fn date_folder(utility: Utility, date: NaiveDate) -> Path {
    Path::from(format!("{READINGS_DIR}/utility={}/date={}", utility.as_str(), date.format("%Y-%m-%d")))
}

/// A master data file, relative to the store's root.
pub fn file_path(utility: Utility, date: NaiveDate, partition: u32, first_offset: u64) -> Path {
    date_folder(utility, date).join(FileName { partition, first_offset }.to_string())
}

/// The name of a master data file: `part-<partition>-<first offset>.parquet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileName {
    pub partition: u32,
    pub first_offset: u64,
}

impl FileName {
    pub fn parse(name: &str) -> Option<Self> {
        let (partition, first_offset) = name.strip_prefix("part-")?.strip_suffix(".parquet")?.split_once('-')?;
        Some(Self { partition: partition.parse().ok()?, first_offset: first_offset.parse().ok()? })
    }
}

impl std::fmt::Display for FileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "part-{}-{}.parquet", self.partition, self.first_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_design() {
        let date = parse_date("2026-11-27").expect("a date");
        assert_eq!(
            file_path(Utility::Gas, date, 3, 1200).as_ref(),
            "readings/utility=gas/date=2026-11-27/part-3-1200.parquet"
        );
        assert_eq!(FileName::parse("part-3-1200.parquet"), Some(FileName { partition: 3, first_offset: 1200 }));
        assert_eq!(FileName::parse("part-3.parquet"), None);
    }

    #[test]
    fn dates_are_utc_days() {
        let date = parse_date("2026-11-27").expect("a date");
        let start = day_start_ms(date);
        assert_eq!(date_of(start), date);
        assert_eq!(date_of(start + DAY_MS - 1), date);
        assert_eq!(date_of(start - 1), parse_date("2026-11-26").expect("a date"));
    }
}
