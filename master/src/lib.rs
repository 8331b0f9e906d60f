//! The master data: every valid reading, kept as Parquet on object storage.
//!
//! Layout (see `DESIGN.md`): `readings/utility=<u>/date=<YYYY-MM-DD>/part-<partition>-<first offset>.parquet`
//! under the store's root, zstd-compressed. A file's name follows from the log
//! partition and the offset of the first record it holds, so a file written
//! again after a crash replaces the first one instead of adding a second copy.
//! The columns are [`schema`]'s; the utility and the date are in the path.

pub mod archiver;
mod layout;
mod readings;
mod store;

pub use layout::{DAY_MS, FileName, date_folder, date_of, dates, day_start_ms, file_path, parse_date};
pub use readings::{COLUMN_OFFSET, ReadingsBuilder, schema};
pub use store::{MasterError, MasterStore, ParquetFile, WrittenFile};

/// The top-level folder of the readings under a store's root.
pub const READINGS_DIR: &str = "readings";
