//! Kafka errors as port errors.

use auth_core::ports::PortError;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Maps a Kafka error to a port error: unavailable (retryable) when a broker
/// could not be reached, did not answer in time or is still loading (the
/// errors Kafka's own clients retry), refused otherwise. The local "unknown
/// partition" and "unknown topic" come from librdkafka's metadata cache, which
/// is briefly empty after a broker restart (a processor died of it in CI).
pub(crate) fn port_error(what: &str, err: KafkaError) -> PortError {
    let retryable = matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::ReplicaNotAvailable
                | RDKafkaErrorCode::BrokerNotAvailable
                | RDKafkaErrorCode::KafkaStorageError
                | RDKafkaErrorCode::FencedLeaderEpoch
                | RDKafkaErrorCode::UnknownLeaderEpoch
                | RDKafkaErrorCode::OffsetNotAvailable
                | RDKafkaErrorCode::NotEnoughReplicas
                | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::QueueFull
                | RDKafkaErrorCode::Resolve
        )
    );
    let (what, message) = (what.to_owned(), err.to_string());
    if retryable { PortError::Unavailable { what, message } } else { PortError::Rejected { what, message } }
}
