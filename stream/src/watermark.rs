//! The operator watermark: the minimum of the partition watermarks, where a
//! partition that has sent nothing for the idle timeout no longer holds it back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use auth_core::ports::TopicPartition;

#[derive(Debug, Default)]
pub struct WatermarkTracker {
    idle_timeout: Duration,
    partitions: HashMap<TopicPartition, (Option<i64>, Instant)>,
}

impl WatermarkTracker {
    pub fn new(idle_timeout: Duration) -> Self {
        Self { idle_timeout, partitions: HashMap::new() }
    }

    /// Records a partition's watermark after it delivered records at `now`.
    pub fn observe(&mut self, partition: &TopicPartition, watermark: Option<i64>, now: Instant) {
        self.partitions.insert(partition.clone(), (watermark, now));
    }

    pub fn forget(&mut self, partition: &TopicPartition) {
        self.partitions.remove(partition);
    }

    /// Minimum over the active partitions with a watermark; when all are
    /// idle, the maximum (nothing holds time back); `None` before any reading.
    pub fn operator_watermark(&self, now: Instant) -> Option<i64> {
        let known = || self.partitions.values().filter_map(|(watermark, seen)| watermark.map(|wm| (wm, *seen)));
        let active_minimum = known()
            .filter(|(_, seen)| now.saturating_duration_since(*seen) < self.idle_timeout)
            .map(|(wm, _)| wm)
            .min();
        active_minimum.or_else(|| known().map(|(wm, _)| wm).max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_active_partitions_idle_ones_excluded() {
        let start = Instant::now();
        let mut tracker = WatermarkTracker::new(Duration::from_secs(30));
        assert_eq!(tracker.operator_watermark(start), None);
        let (a, b, c) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1), TopicPartition::new("t", 2));
        tracker.observe(&a, Some(1_000), start);
        tracker.observe(&b, Some(5_000), start);
        tracker.observe(&c, None, start);
        assert_eq!(tracker.operator_watermark(start), Some(1_000));
        let later = start + Duration::from_secs(31);
        tracker.observe(&b, Some(9_000), later);
        assert_eq!(tracker.operator_watermark(later), Some(9_000), "idle partition a no longer holds it back");
        let much_later = later + Duration::from_secs(60);
        assert_eq!(tracker.operator_watermark(much_later), Some(9_000), "all idle: the newest");
        tracker.observe(&a, Some(2_000), much_later);
        assert_eq!(tracker.operator_watermark(much_later), Some(2_000), "a is back and holds it again");
        tracker.forget(&a);
        assert_eq!(tracker.operator_watermark(much_later), Some(9_000));
    }
}
