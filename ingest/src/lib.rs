//! Ingest: the meter fleet simulator, the writer that puts readings on the
//! log, and the gateway that takes them from meters over HTTP and MQTT.
//!
//! The simulator is deterministic: a [`Fleet`] and its readings follow from the
//! seed alone, so tests and benchmarks can replay exactly the same input.

mod edge_sink;
mod fleet;
pub mod gateway;
pub mod keys;
mod log_sink;
pub mod mqtt;
pub mod profile;
pub mod registry_feed;
mod simulator;

pub use edge_sink::{EdgeSinkError, GatewayTally, HttpSink, MqttSink, edge_json};
pub use fleet::{Fleet, Meter};
pub use log_sink::{LogSink, SinkError};
pub use simulator::{ReadingSink, Simulated, Simulator, run_paced};

/// Items the simulator handed to its sink.
pub const METRIC_SIMULATED: &str = "auth_simulator_readings_total";
