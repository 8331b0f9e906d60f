//! Daily consumption profiles: the expected rate of use of a meter, by
//! customer kind, utility and local time.
//!
//! Residential electricity has a morning and a larger evening peak over a low
//! night base; business use follows office hours on weekdays; gas adds heating
//! that grows in winter; water comes in bursts (showers, taps, machines) whose
//! likelihood follows the household's day.

use auth_core::{CustomerKind, Utility};

/// Flow of a water burst, litres per hour (about 8 L/min).
pub const WATER_BURST_LITRES_PER_HOUR: f64 = 480.0;

/// Local calendar facts a profile depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalTime {
    /// Hour of the day, fractional, 0.0 <= h < 24.0.
    pub hour: f64,
    /// Monday is 0, Sunday is 6.
    pub weekday: u32,
    /// Day of the year, 0-based.
    pub day_of_year: u32,
}

impl LocalTime {
    /// Local time for a UTC instant in a zone `utc_offset_hours` from UTC.
    pub fn at(ts_ms: i64, utc_offset_hours: i8) -> Self {
        let local_ms = ts_ms + i64::from(utc_offset_hours) * 3_600_000;
        let days = local_ms.div_euclid(86_400_000);
        let ms_of_day = local_ms.rem_euclid(86_400_000);
        Self {
            hour: ms_of_day as f64 / 3_600_000.0,
            weekday: (days + 3).rem_euclid(7) as u32,
            // The mean Gregorian year keeps this within a day of the calendar.
            day_of_year: (days as f64).rem_euclid(365.2425) as u32,
        }
    }

    pub fn is_weekend(&self) -> bool {
        self.weekday >= 5
    }
}

/// A smooth bump centred on `centre` hours with half-width `width` hours.
fn bump(hour: f64, centre: f64, width: f64) -> f64 {
    let distance = (hour - centre).abs().min(24.0 - (hour - centre).abs());
    (-(distance / width).powi(2)).exp()
}

/// 1.0 in the depth of winter (mid January), 0.0 in mid July.
fn winter(day_of_year: u32) -> f64 {
    let angle = (f64::from(day_of_year) - 15.0) / 365.25 * std::f64::consts::TAU;
    0.5 + 0.5 * angle.cos()
}

fn office_hours(time: &LocalTime) -> f64 {
    if time.is_weekend() {
        0.0
    } else {
        (bump(time.hour, 13.0, 4.5) * 1.6).min(1.0)
    }
}

/// Expected consumption per hour of an average meter (Wh/h for electricity,
/// litres/h for gas and water) at a local time.
pub fn expected_rate(kind: CustomerKind, utility: Utility, time: &LocalTime) -> f64 {
    let hour = time.hour;
    match (kind, utility) {
        (CustomerKind::Residential, Utility::Electricity) => {
            let weekend_late_morning = if time.is_weekend() { 300.0 * bump(hour, 10.5, 2.0) } else { 0.0 };
            250.0 + 700.0 * bump(hour, 7.5, 1.2) + 1_400.0 * bump(hour, 19.5, 2.2) + weekend_late_morning
        }
        (CustomerKind::Business, Utility::Electricity) => 1_500.0 + 9_000.0 * office_hours(time),
        (CustomerKind::Residential, Utility::Gas) => {
            let heating = winter(time.day_of_year) * (350.0 * bump(hour, 7.0, 1.5) + 450.0 * bump(hour, 19.0, 2.5));
            30.0 + 80.0 * bump(hour, 7.5, 1.0) + heating
        }
        (CustomerKind::Business, Utility::Gas) => 60.0 + winter(time.day_of_year) * 1_200.0 * office_hours(time),
        (CustomerKind::Residential, Utility::Water) => {
            2.0 + 45.0 * bump(hour, 7.0, 1.0) + 30.0 * bump(hour, 19.5, 1.5) + 10.0 * bump(hour, 13.0, 3.0)
        }
        (CustomerKind::Business, Utility::Water) => 5.0 + 120.0 * office_hours(time),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hour: f64, weekday: u32) -> LocalTime {
        LocalTime { hour, weekday, day_of_year: 15 }
    }

    #[test]
    fn local_time_of_known_instants() {
        // 2026-11-28T02:00:00Z is a Saturday; in New York (UTC-5) it is Friday 21:00.
        let ts_ms = 1_795_831_200_000;
        let utc = LocalTime::at(ts_ms, 0);
        assert_eq!((utc.hour, utc.weekday), (2.0, 5));
        let new_york = LocalTime::at(ts_ms, -5);
        assert_eq!((new_york.hour, new_york.weekday), (21.0, 4));
    }

    #[test]
    fn residential_evening_peak_is_above_night() {
        for utility in Utility::ALL {
            let evening = expected_rate(CustomerKind::Residential, utility, &at(19.5, 2));
            let night = expected_rate(CustomerKind::Residential, utility, &at(3.0, 2));
            assert!(evening > 2.0 * night, "{utility}: evening {evening} vs night {night}");
        }
    }

    #[test]
    fn business_weekday_is_above_weekend() {
        for utility in Utility::ALL {
            let weekday = expected_rate(CustomerKind::Business, utility, &at(11.0, 1));
            let weekend = expected_rate(CustomerKind::Business, utility, &at(11.0, 6));
            assert!(weekday > 2.0 * weekend, "{utility}: weekday {weekday} vs weekend {weekend}");
        }
    }

    #[test]
    fn gas_heating_follows_the_season() {
        let january = LocalTime { hour: 19.0, weekday: 2, day_of_year: 15 };
        let july = LocalTime { day_of_year: 196, ..january };
        let winter = expected_rate(CustomerKind::Residential, Utility::Gas, &january);
        let summer = expected_rate(CustomerKind::Residential, Utility::Gas, &july);
        assert!(winter > 3.0 * summer, "winter {winter} vs summer {summer}");
    }
}
