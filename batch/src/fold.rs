//! The day's outputs, folded from per customer and hour sums.

use std::collections::HashMap;

use auth_core::{Region, Utility};
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

/// One customer's, utility's and hour's sums, as the query returns them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerHour {
    pub utility: Utility,
    pub customer_id: u64,
    pub region: Region,
    pub hour: u8,
    pub total: f64,
    pub min_value: f64,
    pub max_value: f64,
    pub readings: u64,
}

/// Collects [`CustomerHour`]s in any order.
#[derive(Default)]
pub struct DayFold {
    customers: FxHashMap<(Utility, u64), CustomerDay>,
    region_hours: HashMap<(Utility, Region, u8), RegionHour>,
}

impl DayFold {
    pub fn add(&mut self, hour: CustomerHour) {
        let day = self.customers.entry((hour.utility, hour.customer_id)).or_insert(CustomerDay {
            utility: hour.utility,
            customer_id: hour.customer_id,
            region: hour.region,
            total: 0.0,
            min_value: f64::INFINITY,
            max_value: f64::NEG_INFINITY,
            readings: 0,
            peak_hour: hour.hour,
            peak_hour_total: f64::NEG_INFINITY,
        });
        day.total += hour.total;
        day.min_value = day.min_value.min(hour.min_value);
        day.max_value = day.max_value.max(hour.max_value);
        day.readings += hour.readings;
        if hour.total > day.peak_hour_total || (hour.total == day.peak_hour_total && hour.hour < day.peak_hour) {
            day.peak_hour = hour.hour;
            day.peak_hour_total = hour.total;
        }
        let region = self.region_hours.entry((hour.utility, hour.region, hour.hour)).or_insert(RegionHour {
            utility: hour.utility,
            region: hour.region,
            hour: hour.hour,
            total: 0.0,
            readings: 0,
            customers: 0,
        });
        region.total += hour.total;
        region.readings += hour.readings;
        region.customers += 1;
    }

    pub fn finish(self) -> DayOutputs {
        let mut customers: Vec<CustomerDay> = self.customers.into_values().collect();
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

    fn hour(customer_id: u64, hour: u8, total: f64) -> CustomerHour {
        let region = Region::from_code("US-CA").expect("a region");
        CustomerHour { utility: Utility::Water, customer_id, region, hour, total, min_value: total / 2.0, max_value: total / 2.0, readings: 2 }
    }

    #[test]
    fn folds_days_peaks_regions_and_tops() {
        let mut fold = DayFold::default();
        for item in [hour(7, 5, 3.0), hour(7, 2, 3.0), hour(7, 9, 1.0), hour(8, 9, 10.0)] {
            fold.add(item);
        }
        let outputs = fold.finish();
        let seven = outputs.customers[0];
        assert_eq!((seven.customer_id, seven.total, seven.readings, seven.peak_hour, seven.peak_hour_total), (7, 7.0, 6, 2, 3.0));
        assert_eq!((seven.min_value, seven.max_value), (0.5, 1.5));
        assert_eq!(outputs.region_hours.iter().map(|h| (h.hour, h.total, h.customers)).collect::<Vec<_>>(), vec![(2, 3.0, 1), (5, 3.0, 1), (9, 11.0, 2)]);
        assert_eq!(outputs.top_customers.iter().map(|t| (t.position, t.customer_id)).collect::<Vec<_>>(), vec![(1, 8), (2, 7)]);
        assert_eq!(outputs.totals, vec![(Utility::Water, UtilityTotal { total: 17.0, readings: 8 })]);
    }
}
