//! The operators' edits and approvals in force on a day's intervals
//! ([`auth_results::edits`]), as the fold applies them: an edit replaces the
//! value of the reading at its event time, or adds one where the meter sent
//! none; an approval keeps the reading as read. Neither is ever flagged
//! suspect. A recomputation applies them again, so they survive it.

use auth_core::{Region, Utility};
use auth_results::IntervalEdit;
use rustc_hash::FxHashMap;

/// The edits of one day, by customer.
#[derive(Debug, Default)]
pub struct Edits {
    /// Each customer's edits, ordered by meter and event time.
    by_customer: FxHashMap<(Utility, u64), Vec<IntervalEdit>>,
}

impl Edits {
    /// The edits in `edits`, in any order.
    pub fn new(edits: impl IntoIterator<Item = IntervalEdit>) -> Self {
        let mut by_customer: FxHashMap<(Utility, u64), Vec<IntervalEdit>> = FxHashMap::default();
        for edit in edits {
            by_customer.entry((edit.utility, edit.customer_id)).or_default().push(edit);
        }
        for customer_edits in by_customer.values_mut() {
            customer_edits.sort_unstable_by_key(|edit| (edit.meter_id, edit.ts_ms));
        }
        Self { by_customer }
    }

    pub fn is_empty(&self) -> bool {
        self.by_customer.is_empty()
    }

    /// A customer's edits, ordered by meter and event time.
    pub fn of_customer(&self, utility: Utility, customer_id: u64) -> &[IntervalEdit] {
        self.by_customer.get(&(utility, customer_id)).map_or(&[], Vec::as_slice)
    }

    /// The customers of `utility` with edits, ordered by id, with the region
    /// their edits name.
    pub fn customers(&self, utility: Utility) -> Vec<(u64, Region)> {
        let mut customers: Vec<(u64, Region)> = self
            .by_customer
            .iter()
            .filter(|((of, _), _)| *of == utility)
            .filter_map(|(&(_, customer_id), edits)| edits.first().map(|edit| (customer_id, edit.region)))
            .collect();
        customers.sort_unstable_by_key(|&(customer_id, _)| customer_id);
        customers
    }
}
