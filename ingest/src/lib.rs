//! Ingest: the meter fleet simulator and the writer that puts readings on the log.
//!
//! The simulator is deterministic: a [`Fleet`] and its readings follow from the
//! seed alone, so tests and benchmarks can replay exactly the same input.

mod fleet;
mod log_sink;
pub mod profile;
mod simulator;

pub use fleet::{Fleet, Meter};
pub use log_sink::{LogSink, SinkError};
pub use simulator::{ReadingSink, Simulated, Simulator, run_paced};

/// Items the simulator handed to its sink.
pub const METRIC_SIMULATED: &str = "auth_simulator_readings_total";
