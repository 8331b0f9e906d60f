//! The Kubernetes operator of AUTH.
//!
//! [`crd`] defines the `UtilityPipeline` custom resource from `PipelineSpec`
//! (`auth crd` writes it to `crds/`); [`objects`] computes what a pipeline is
//! made of; [`controller`] reconciles pipelines into Kafka topics and those
//! objects; [`lease`] makes one of several operator replicas the leader;
//! [`key_secret`] edits the gateway keys a pipeline's Secret holds.

pub mod batch_status;
pub mod controller;
pub mod crd;
pub mod key_secret;
pub mod lease;
pub mod objects;

pub use controller::Context;
pub use crd::{UtilityPipeline, UtilityPipelineSpec, UtilityPipelineStatus};
pub use kube::Client;
pub use lease::{LeaderLease, lead};
