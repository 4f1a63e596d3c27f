//! Kafka errors as weir [`Error`]s: connection trouble is [`ErrorKind::Unavailable`] (retryable).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use weir_core::{Error, ErrorKind};

use crate::config::is_secret;

/// Maps a Kafka error of operation `what` to weir's error type.
///
/// Transport failures, timeouts, a broker without a leader or coordinator, a full queue,
/// throttling and rebalances in progress are `Unavailable` (retryable); authentication,
/// authorization and bad settings are `Config`; a record the broker finds too large is
/// `TooLarge`; anything else is `Internal`. A configuration error never carries the value of
/// a secret setting.
pub(crate) fn kafka_error(what: &'static str, e: KafkaError) -> Error {
    if let KafkaError::ClientConfig(_, description, key, value) = &e {
        let shown = if is_secret(key) { "***" } else { value };
        return Error::new(
            ErrorKind::Config,
            format!(
                "kafka broker: {what} failed: librdkafka setting {key}={shown:?}: {description}"
            ),
        )
        .permanent();
    }
    let kind = e.rdkafka_error_code().map_or_else(
        || match &e {
            KafkaError::ClientCreation(_) => ErrorKind::Config,
            KafkaError::Canceled => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        },
        classify,
    );
    Error::new(kind, format!("kafka broker: {what} failed"))
        .with_context("kafka", e.to_string())
        .with_source(e)
}

/// The weir error kind of a librdkafka error code.
pub(crate) fn classify(code: RDKafkaErrorCode) -> ErrorKind {
    use RDKafkaErrorCode as C;
    match code {
        C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::Resolve
        | C::MessageTimedOut
        | C::OperationTimedOut
        | C::RequestTimedOut
        | C::QueueFull
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::NetworkException
        | C::CoordinatorLoadInProgress
        | C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::RebalanceInProgress
        | C::TimedOutQueue
        | C::WaitingForCoordinator
        | C::BrokerNotAvailable
        | C::ReplicaNotAvailable
        | C::ISRInsufficient
        | C::Retry
        | C::NoOffset
        | C::KafkaStorageError
        | C::PreferredLeaderNotAvailable
        | C::FencedLeaderEpoch
        | C::UnknownLeaderEpoch
        | C::OffsetNotAvailable
        | C::ThrottlingQuotaExceeded
        | C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::UnknownPartition => ErrorKind::Unavailable,
        C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
            ErrorKind::TooLarge
        }
        C::Authentication
        | C::SaslAuthenticationFailed
        | C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::UnsupportedSASLMechanism
        | C::IllegalSASLState
        | C::SSL
        | C::InvalidConfig
        | C::InvalidArgument
        | C::InvalidReplicationFactor
        | C::InvalidPartitions
        | C::InvalidTopic
        | C::PolicyViolation => ErrorKind::Config,
        C::UnsupportedFeature | C::UnsupportedVersion => ErrorKind::Unsupported,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaConfRes;

    use super::*;

    #[test]
    fn transport_errors_are_retryable() {
        let e = kafka_error(
            "publish",
            KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure),
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(
            e.to_string().starts_with("kafka broker: publish failed"),
            "{e}"
        );
        let e = kafka_error(
            "publish",
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        let e = kafka_error(
            "subscribe",
            KafkaError::MessageConsumption(RDKafkaErrorCode::SaslAuthenticationFailed),
        );
        assert_eq!(e.kind(), ErrorKind::Config);
    }

    #[test]
    fn config_errors_hide_secrets() {
        let e = kafka_error(
            "connecting",
            KafkaError::ClientConfig(
                RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
                "bad value".into(),
                "sasl.password".into(),
                "s3cret".into(),
            ),
        );
        assert_eq!(e.kind(), ErrorKind::Config);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("sasl.password"), "{shown}");
    }
}
