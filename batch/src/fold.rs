//! The day's outputs, folded from per customer and hour sums.

use std::collections::HashMap;

use auth_core::{Region, Utility};
use auth_master::DAY_MS;
use rustc_hash::FxHashMap;

use crate::TOP_CUSTOMERS;

/// One customer's usage of one utility over a day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerDay {
    pub utility: Utility,
    pub customer_id: u64,
    pub region: Region,
    pub total: f64,
    pub min_value: f64,
    pub max_value: f64,
    pub readings: u64,
    /// The UTC hour (0-23) with the most usage; the earliest of equal ones.
    pub peak_hour: u8,
    pub peak_hour_total: f64,
}

/// One region's usage of one utility in one UTC hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionHour {
    pub utility: Utility,
    pub region: Region,
    pub hour: u8,
    pub total: f64,
    pub readings: u64,
    pub customers: u64,
}

/// A place in a region's list of largest customers for a utility.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopCustomer {
    pub utility: Utility,
    pub region: Region,
    /// 1 for the largest.
    pub position: u32,
    pub customer_id: u64,
    pub total: f64,
}

/// A utility's day over every customer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UtilityTotal {
    pub total: f64,
    pub readings: u64,
}

/// Everything the batch computes for one date.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayOutputs {
    /// Ordered by utility and customer.
    pub customers: Vec<CustomerDay>,
    /// Ordered by utility, region and hour.
    pub region_hours: Vec<RegionHour>,
    /// Ordered by utility, region and position.
    pub top_customers: Vec<TopCustomer>,
    pub totals: Vec<(Utility, UtilityTotal)>,
}

/// Where a reading sits in the master data's order: files are sorted by
/// customer, meter, event time and log offset, so a repeated reading (same
/// meter and event time) follows its first copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadingKey {
    pub customer_id: u64,
    pub meter_id: u64,
    pub ts_ms: i64,
    pub log_offset: u64,
}

impl ReadingKey {
    fn same_reading(&self, other: &Self) -> bool {
        (self.customer_id, self.meter_id, self.ts_ms) == (other.customer_id, other.meter_id, other.ts_ms)
    }
}

/// Readings came in another order than the master data's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("readings are not ordered by customer, meter, event time and offset: {after:?} came after {before:?}")]
pub struct OutOfOrder {
    pub before: ReadingKey,
    pub after: ReadingKey,
}

/// One customer's readings in one UTC hour.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HourSums {
    total: f64,
    min_value: f64,
    max_value: f64,
    readings: u64,
}

const NO_READINGS: HourSums = HourSums { total: 0.0, min_value: f64::INFINITY, max_value: f64::NEG_INFINITY, readings: 0 };

const HOUR_MS: i64 = 3_600_000;

/// Folds one utility's readings of one log partition, in the master data's
/// order, one customer at a time: the first copy of a repeated reading
/// counts (its offset is the lowest), as in the stream. Memory holds one
/// customer's hours, however many readings there are.
pub struct ReadingFold {
    utility: Utility,
    customer: Option<(u64, Region)>,
    hours: [HourSums; 24],
    last: Option<ReadingKey>,
    day: DayFold,
}

impl ReadingFold {
    pub fn new(utility: Utility) -> Self {
        Self { utility, customer: None, hours: [NO_READINGS; 24], last: None, day: DayFold::default() }
    }

    pub fn push(&mut self, key: ReadingKey, region: Region, value: f64) -> Result<(), OutOfOrder> {
        if let Some(last) = self.last {
            if key < last {
                return Err(OutOfOrder { before: last, after: key });
            }
            if key.same_reading(&last) {
                return Ok(());
            }
        }
        self.last = Some(key);
        match self.customer {
            Some((customer_id, _)) if customer_id == key.customer_id => {}
            _ => {
                self.close_customer();
                self.customer = Some((key.customer_id, region));
            }
        }
        let hour = &mut self.hours[(key.ts_ms.rem_euclid(DAY_MS) / HOUR_MS) as usize];
        hour.total += value;
        hour.min_value = hour.min_value.min(value);
        hour.max_value = hour.max_value.max(value);
        hour.readings += 1;
        Ok(())
    }

    fn close_customer(&mut self) {
        if let Some((customer_id, region)) = self.customer.take() {
            self.day.add_customer(self.utility, customer_id, region, &self.hours);
            self.hours = [NO_READINGS; 24];
        }
    }

    pub fn finish(mut self) -> DayFold {
        self.close_customer();
        self.day
    }
}

/// Collects customers' days, from any number of [`ReadingFold`]s.
#[derive(Default)]
pub struct DayFold {
    customers: Vec<CustomerDay>,
    region_hours: FxHashMap<(Utility, Region, u8), RegionHour>,
}

impl DayFold {
    fn add_customer(&mut self, utility: Utility, customer_id: u64, region: Region, hours: &[HourSums; 24]) {
        let mut day = CustomerDay {
            utility,
            customer_id,
            region,
            total: 0.0,
            min_value: f64::INFINITY,
            max_value: f64::NEG_INFINITY,
            readings: 0,
            peak_hour: 0,
            peak_hour_total: f64::NEG_INFINITY,
        };
        for (hour, sums) in (0u8..).zip(hours).filter(|(_, sums)| sums.readings > 0) {
            day.total += sums.total;
            day.min_value = day.min_value.min(sums.min_value);
            day.max_value = day.max_value.max(sums.max_value);
            day.readings += sums.readings;
            if sums.total > day.peak_hour_total {
                day.peak_hour = hour;
                day.peak_hour_total = sums.total;
            }
            let region_hour = self.region_hours.entry((utility, region, hour)).or_insert(RegionHour {
                utility,
                region,
                hour,
                total: 0.0,
                readings: 0,
                customers: 0,
            });
            region_hour.total += sums.total;
            region_hour.readings += sums.readings;
            region_hour.customers += 1;
        }
        self.customers.push(day);
    }

    /// Adds another fold's customers, which must not be in this one.
    pub fn merge(&mut self, other: DayFold) {
        self.customers.extend(other.customers);
        for (key, hour) in other.region_hours {
            self.region_hours
                .entry(key)
                .and_modify(|mine| {
                    mine.total += hour.total;
                    mine.readings += hour.readings;
                    mine.customers += hour.customers;
                })
                .or_insert(hour);
        }
    }

    pub fn finish(self) -> DayOutputs {
        let mut customers = self.customers;
        customers.sort_unstable_by_key(|day| (day.utility, day.customer_id));
        let mut region_hours: Vec<RegionHour> = self.region_hours.into_values().collect();
        region_hours.sort_unstable_by_key(|hour| (hour.utility, hour.region, hour.hour));
        let mut by_region: HashMap<(Utility, Region), Vec<&CustomerDay>> = HashMap::new();
        let mut totals: Vec<(Utility, UtilityTotal)> = Vec::new();
        for day in &customers {
            by_region.entry((day.utility, day.region)).or_default().push(day);
            match totals.last_mut() {
                Some((utility, total)) if *utility == day.utility => {
                    total.total += day.total;
                    total.readings += day.readings;
                }
                _ => totals.push((day.utility, UtilityTotal { total: day.total, readings: day.readings })),
            }
        }
        let mut top_customers = Vec::new();
        for ((utility, region), mut days) in by_region {
            days.sort_unstable_by(|a, b| b.total.total_cmp(&a.total).then(a.customer_id.cmp(&b.customer_id)));
            for (index, day) in days.into_iter().take(TOP_CUSTOMERS).enumerate() {
                top_customers.push(TopCustomer {
                    utility,
                    region,
                    position: index as u32 + 1,
                    customer_id: day.customer_id,
                    total: day.total,
                });
            }
        }
        top_customers.sort_unstable_by_key(|top| (top.utility, top.region, top.position));
        DayOutputs { customers, region_hours, top_customers, totals }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn key(customer_id: u64, meter_id: u64, hour: i64, log_offset: u64) -> ReadingKey {
        ReadingKey { customer_id, meter_id, ts_ms: 20 * DAY_MS + hour * HOUR, log_offset }
    }

    #[test]
    fn folds_days_peaks_regions_and_tops_keeping_first_copies() {
        let region = Region::from_code("US-CA").expect("a region");
        let mut fold = ReadingFold::new(Utility::Water);
        let readings = [
            (key(7, 1, 2, 10), 1.0),
            (key(7, 1, 2, 11), 99.0),
            (key(7, 1, 5, 3), 3.0),
            (key(7, 2, 2, 4), 2.0),
            (key(7, 2, 9, 5), 1.0),
            (key(8, 3, 9, 6), 10.0),
        ];
        for (key, value) in readings {
            fold.push(key, region, value).expect("in order");
        }
        let outputs = fold.finish().finish();
        let seven = outputs.customers[0];
        assert_eq!((seven.customer_id, seven.total, seven.readings, seven.peak_hour, seven.peak_hour_total), (7, 7.0, 4, 2, 3.0));
        assert_eq!((seven.min_value, seven.max_value), (1.0, 3.0));
        let hours: Vec<_> = outputs.region_hours.iter().map(|h| (h.hour, h.total, h.readings, h.customers)).collect();
        assert_eq!(hours, vec![(2, 3.0, 2, 1), (5, 3.0, 1, 1), (9, 11.0, 2, 2)]);
        assert_eq!(outputs.top_customers.iter().map(|t| (t.position, t.customer_id)).collect::<Vec<_>>(), vec![(1, 8), (2, 7)]);
        assert_eq!(outputs.totals, vec![(Utility::Water, UtilityTotal { total: 17.0, readings: 5 })]);
    }

    #[test]
    fn readings_out_of_order_are_refused() {
        let region = Region::from_code("US-CA").expect("a region");
        let mut fold = ReadingFold::new(Utility::Gas);
        fold.push(key(7, 1, 5, 3), region, 1.0).expect("first");
        let err = fold.push(key(7, 1, 2, 4), region, 1.0).expect_err("an earlier event time of the same meter");
        assert_eq!(err.after, key(7, 1, 2, 4));
    }

    #[test]
    fn folds_merge_customers_and_region_hours() {
        let region = Region::from_code("US-TX").expect("a region");
        let mut first = ReadingFold::new(Utility::Gas);
        first.push(key(1, 1, 3, 0), region, 2.0).expect("in order");
        let mut second = ReadingFold::new(Utility::Gas);
        second.push(key(2, 2, 3, 0), region, 5.0).expect("in order");
        let mut day = first.finish();
        day.merge(second.finish());
        let outputs = day.finish();
        assert_eq!(outputs.customers.iter().map(|c| c.customer_id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(outputs.region_hours.iter().map(|h| (h.total, h.customers)).collect::<Vec<_>>(), vec![(7.0, 2)]);
    }
}
