//! Regions as ISO 3166-2 codes, with the table the simulator and the map share.
//!
//! The shipped table holds the 50 US states and the District of Columbia with
//! their 2020 census population (used to place simulated customers and to
//! colour the map per capita) and their standard-time UTC offset (used to shape
//! daily profiles in local time).

use std::fmt;

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
}

const fn region(code: &'static str, name: &'static str, population: u32, utc_offset_hours: i8) -> RegionInfo {
    RegionInfo { code, name, population, utc_offset_hours }
}

/// The shipped region table, sorted by code.
pub const REGIONS: [RegionInfo; 51] = [
    region("US-AK", "Alaska", 733_391, -9),
    region("US-AL", "Alabama", 5_024_279, -6),
    region("US-AR", "Arkansas", 3_011_524, -6),
    region("US-AZ", "Arizona", 7_151_502, -7),
    region("US-CA", "California", 39_538_223, -8),
    region("US-CO", "Colorado", 5_773_714, -7),
    region("US-CT", "Connecticut", 3_605_944, -5),
    region("US-DC", "District of Columbia", 689_545, -5),
    region("US-DE", "Delaware", 989_948, -5),
    region("US-FL", "Florida", 21_538_187, -5),
    region("US-GA", "Georgia", 10_711_908, -5),
    region("US-HI", "Hawaii", 1_455_271, -10),
    region("US-IA", "Iowa", 3_190_369, -6),
    region("US-ID", "Idaho", 1_839_106, -7),
    region("US-IL", "Illinois", 12_812_508, -6),
    region("US-IN", "Indiana", 6_785_528, -5),
    region("US-KS", "Kansas", 2_937_880, -6),
    region("US-KY", "Kentucky", 4_505_836, -5),
    region("US-LA", "Louisiana", 4_657_757, -6),
    region("US-MA", "Massachusetts", 7_029_917, -5),
    region("US-MD", "Maryland", 6_177_224, -5),
    region("US-ME", "Maine", 1_362_359, -5),
    region("US-MI", "Michigan", 10_077_331, -5),
    region("US-MN", "Minnesota", 5_706_494, -6),
    region("US-MO", "Missouri", 6_154_913, -6),
    region("US-MS", "Mississippi", 2_961_279, -6),
    region("US-MT", "Montana", 1_084_225, -7),
    region("US-NC", "North Carolina", 10_439_388, -5),
    region("US-ND", "North Dakota", 779_094, -6),
    region("US-NE", "Nebraska", 1_961_504, -6),
    region("US-NH", "New Hampshire", 1_377_529, -5),
    region("US-NJ", "New Jersey", 9_288_994, -5),
    region("US-NM", "New Mexico", 2_117_522, -7),
    region("US-NV", "Nevada", 3_104_614, -8),
    region("US-NY", "New York", 20_201_249, -5),
    region("US-OH", "Ohio", 11_799_448, -5),
    region("US-OK", "Oklahoma", 3_959_353, -6),
    region("US-OR", "Oregon", 4_237_256, -8),
    region("US-PA", "Pennsylvania", 13_002_700, -5),
    region("US-RI", "Rhode Island", 1_097_379, -5),
    region("US-SC", "South Carolina", 5_118_425, -5),
    region("US-SD", "South Dakota", 886_667, -6),
    region("US-TN", "Tennessee", 6_910_840, -6),
    region("US-TX", "Texas", 29_145_505, -6),
    region("US-UT", "Utah", 3_271_616, -7),
    region("US-VA", "Virginia", 8_631_393, -5),
    region("US-VT", "Vermont", 643_077, -5),
    region("US-WA", "Washington", 7_705_281, -8),
    region("US-WI", "Wisconsin", 5_893_718, -6),
    region("US-WV", "West Virginia", 1_793_716, -5),
    region("US-WY", "Wyoming", 576_851, -7),
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
