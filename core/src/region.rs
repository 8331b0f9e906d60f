//! Regions as ISO 3166-2 codes, with the table the simulator and the map share.
//!
//! The shipped table holds the 50 US states and the District of Columbia with
//! their 2020 census population (used to place simulated customers and to
//! colour the map per capita), their standard-time UTC offset (used to shape
//! simulated daily profiles) and their IANA time zone: a customer's day is
//! the local day of its region's zone ([`crate::local_day`]). A state that
//! spans two zones has the zone most of its people live in.

use std::fmt;

use chrono_tz::{America, Pacific, Tz};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One row of the region table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInfo {
    /// ISO 3166-2 code, e.g. `US-CA`.
    pub code: &'static str,
    pub name: &'static str,
    /// Residents at the 2020 census.
    pub population: u32,
    /// Standard-time offset from UTC in hours.
    pub utc_offset_hours: i8,
    /// The IANA time zone whose local days are the region's customers' days.
    pub time_zone: Tz,
}

const fn region(code: &'static str, name: &'static str, population: u32, utc_offset_hours: i8, time_zone: Tz) -> RegionInfo {
    RegionInfo { code, name, population, utc_offset_hours, time_zone }
}

/// The shipped region table, sorted by code.
pub const REGIONS: [RegionInfo; 51] = [
    region("US-AK", "Alaska", 733_391, -9, America::Anchorage),
    region("US-AL", "Alabama", 5_024_279, -6, America::Chicago),
    region("US-AR", "Arkansas", 3_011_524, -6, America::Chicago),
    region("US-AZ", "Arizona", 7_151_502, -7, America::Phoenix),
    region("US-CA", "California", 39_538_223, -8, America::Los_Angeles),
    region("US-CO", "Colorado", 5_773_714, -7, America::Denver),
    region("US-CT", "Connecticut", 3_605_944, -5, America::New_York),
    region("US-DC", "District of Columbia", 689_545, -5, America::New_York),
    region("US-DE", "Delaware", 989_948, -5, America::New_York),
    region("US-FL", "Florida", 21_538_187, -5, America::New_York),
    region("US-GA", "Georgia", 10_711_908, -5, America::New_York),
    region("US-HI", "Hawaii", 1_455_271, -10, Pacific::Honolulu),
    region("US-IA", "Iowa", 3_190_369, -6, America::Chicago),
    region("US-ID", "Idaho", 1_839_106, -7, America::Boise),
    region("US-IL", "Illinois", 12_812_508, -6, America::Chicago),
    region("US-IN", "Indiana", 6_785_528, -5, America::Indiana::Indianapolis),
    region("US-KS", "Kansas", 2_937_880, -6, America::Chicago),
    region("US-KY", "Kentucky", 4_505_836, -5, America::Kentucky::Louisville),
    region("US-LA", "Louisiana", 4_657_757, -6, America::Chicago),
    region("US-MA", "Massachusetts", 7_029_917, -5, America::New_York),
    region("US-MD", "Maryland", 6_177_224, -5, America::New_York),
    region("US-ME", "Maine", 1_362_359, -5, America::New_York),
    region("US-MI", "Michigan", 10_077_331, -5, America::Detroit),
    region("US-MN", "Minnesota", 5_706_494, -6, America::Chicago),
    region("US-MO", "Missouri", 6_154_913, -6, America::Chicago),
    region("US-MS", "Mississippi", 2_961_279, -6, America::Chicago),
    region("US-MT", "Montana", 1_084_225, -7, America::Denver),
    region("US-NC", "North Carolina", 10_439_388, -5, America::New_York),
    region("US-ND", "North Dakota", 779_094, -6, America::Chicago),
    region("US-NE", "Nebraska", 1_961_504, -6, America::Chicago),
    region("US-NH", "New Hampshire", 1_377_529, -5, America::New_York),
    region("US-NJ", "New Jersey", 9_288_994, -5, America::New_York),
    region("US-NM", "New Mexico", 2_117_522, -7, America::Denver),
    region("US-NV", "Nevada", 3_104_614, -8, America::Los_Angeles),
    region("US-NY", "New York", 20_201_249, -5, America::New_York),
    region("US-OH", "Ohio", 11_799_448, -5, America::New_York),
    region("US-OK", "Oklahoma", 3_959_353, -6, America::Chicago),
    region("US-OR", "Oregon", 4_237_256, -8, America::Los_Angeles),
    region("US-PA", "Pennsylvania", 13_002_700, -5, America::New_York),
    region("US-RI", "Rhode Island", 1_097_379, -5, America::New_York),
    region("US-SC", "South Carolina", 5_118_425, -5, America::New_York),
    region("US-SD", "South Dakota", 886_667, -6, America::Chicago),
    region("US-TN", "Tennessee", 6_910_840, -6, America::Chicago),
    region("US-TX", "Texas", 29_145_505, -6, America::Chicago),
    region("US-UT", "Utah", 3_271_616, -7, America::Denver),
    region("US-VA", "Virginia", 8_631_393, -5, America::New_York),
    region("US-VT", "Vermont", 643_077, -5, America::New_York),
    region("US-WA", "Washington", 7_705_281, -8, America::Los_Angeles),
    region("US-WI", "Wisconsin", 5_893_718, -6, America::Chicago),
    region("US-WV", "West Virginia", 1_793_716, -5, America::New_York),
    region("US-WY", "Wyoming", 576_851, -7, America::Denver),
];

/// A code as a big-endian integer (NUL-padded), so that integer order is the
/// codes' byte order and a lookup compares integers, not strings.
const fn pack(code: &[u8]) -> u64 {
    let mut packed = 0u64;
    let mut index = 0;
    while index < MAX_CODE_LEN {
        let byte = if index < code.len() { code[index] } else { 0 };
        packed = (packed << 8) | byte as u64;
        index += 1;
    }
    packed
}

const PACKED_CODES: [u64; REGIONS.len()] = {
    let mut packed = [0u64; REGIONS.len()];
    let mut index = 0;
    while index < REGIONS.len() {
        packed[index] = pack(REGIONS[index].code.as_bytes());
        index += 1;
    }
    packed
};

/// A region of the shipped table: a small index, cheap to copy and compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(u8);

/// Longest region code the wire format carries (`CC-SSS`).
pub const MAX_CODE_LEN: usize = 6;

impl Region {
    /// Every region of the table, in code order.
    pub fn all() -> impl ExactSizeIterator<Item = Region> {
        (0..REGIONS.len() as u8).map(Region)
    }

    /// Looks a region up by its ISO 3166-2 code (case-sensitive, e.g. `US-CA`).
    pub fn from_code(code: &str) -> Option<Region> {
        Self::from_code_bytes(code.as_bytes())
    }

    /// Looks a region up by the bytes of its code.
    pub fn from_code_bytes(code: &[u8]) -> Option<Region> {
        if code.len() > MAX_CODE_LEN || code.contains(&0) {
            return None;
        }
        let packed = pack(code);
        PACKED_CODES.binary_search(&packed).ok().map(|index| Region(index as u8))
    }

    /// The region with this table index, if there is one.
    pub fn from_index(index: usize) -> Option<Region> {
        (index < REGIONS.len()).then_some(Region(index as u8))
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn info(self) -> &'static RegionInfo {
        &REGIONS[self.index()]
    }

    pub fn code(self) -> &'static str {
        self.info().code
    }

    pub fn time_zone(self) -> Tz {
        self.info().time_zone
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Region::from_code(&code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown region `{code}`")))
    }
}

/// Total population of the table, for weighting.
pub fn total_population() -> u64 {
    REGIONS.iter().map(|row| u64::from(row.population)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_fits_the_wire() {
        for pair in REGIONS.windows(2) {
            assert!(pair[0].code < pair[1].code, "{} before {}", pair[0].code, pair[1].code);
        }
        assert!(REGIONS.iter().all(|row| row.code.len() <= MAX_CODE_LEN));
        assert_eq!(REGIONS.len(), 51);
    }

    #[test]
    fn each_zone_keeps_the_standard_offset_of_the_table() {
        use chrono::{Offset, TimeZone};
        let january = chrono::NaiveDate::from_ymd_opt(2026, 1, 15).and_then(|date| date.and_hms_opt(12, 0, 0)).expect("a date");
        for row in REGIONS {
            let offset = row.time_zone.offset_from_utc_datetime(&january).fix().local_minus_utc();
            assert_eq!(offset, i32::from(row.utc_offset_hours) * 3_600, "{} in {}", row.code, row.time_zone.name());
        }
    }

    #[test]
    fn lookup_by_code() {
        let california = Region::from_code("US-CA").expect("California is in the table");
        assert_eq!(california.info().name, "California");
        assert_eq!(california.to_string(), "US-CA");
        assert_eq!(Region::from_code("US-XX"), None);
        assert_eq!(Region::from_code("us-ca"), None);
        assert_eq!(Region::from_code("US-CAX"), None);
        assert_eq!(Region::from_code("US-CA\0\0\0"), None);
        assert_eq!(Region::from_code(""), None);
        for region in Region::all() {
            assert_eq!(Region::from_code(region.code()), Some(region));
        }
        assert!((330_000_000..340_000_000).contains(&total_population()));
    }
}
