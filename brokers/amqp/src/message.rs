//! How a weir message is carried by AMQP: headers, properties, delay buckets, and the
//! redelivery count read back.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::link::{DELAY_HEADER, delay_header_value};

/// Header holding the weir key (a long string: keys are not limited to 255 bytes).
pub(crate) const KEY_HEADER: &str = "weir-key";
/// Header holding the deliveries before this copy (set on delayed redeliveries, which are new
/// messages to RabbitMQ).
pub(crate) const REDELIVERIES_HEADER: &str = "weir-redeliveries";

/// Properties of a published message: persistent, the key (and redelivery count) in headers.
pub(crate) fn properties(key: &str, redeliveries: u32) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        KEY_HEADER.into(),
        AMQPValue::LongString(LongString::from(key)),
    );
    if redeliveries > 0 {
        headers.insert(
            REDELIVERIES_HEADER.into(),
            AMQPValue::LongUInt(redeliveries),
        );
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// Properties of a delayed redelivery: those of [`properties`], plus the bucket header and a
/// per-message expiration of `delay_ms`.
pub(crate) fn delayed_properties(
    key: &str,
    redeliveries: u32,
    ceiling_ms: u64,
    delay_ms: u64,
) -> BasicProperties {
    let mut props = properties(key, redeliveries);
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(DELAY_HEADER.into(), delay_header_value(ceiling_ms));
    props = props.with_headers(headers);
    props.with_expiration(delay_ms.to_string().into())
}

/// The weir key of a delivery (empty when the header is missing: a message published by
/// something else than weir).
pub(crate) fn key_of(props: &BasicProperties) -> String {
    match header(props, KEY_HEADER) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => String::new(),
    }
}

/// Deliveries before this one: the count carried by a delayed redelivery, plus RabbitMQ's
/// own count of this copy — the quorum queue's `x-delivery-count`, or at least 1 when the
/// `redelivered` flag is set (classic queues, and quorum queues of versions that do not count
/// every return).
pub(crate) fn redeliveries_of(props: &BasicProperties, redelivered: bool) -> u32 {
    let carried = header(props, REDELIVERIES_HEADER)
        .and_then(int_of)
        .unwrap_or(0);
    let counted = header(props, "x-delivery-count")
        .and_then(int_of)
        .unwrap_or(0);
    let this_copy = counted.max(u32::from(redelivered));
    carried.saturating_add(this_copy)
}

fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().iter().find(|(k, _)| k.as_str() == name))
        .map(|(_, v)| v)
}

fn int_of(value: &AMQPValue) -> Option<u32> {
    let n: i128 = match *value {
        AMQPValue::ShortShortInt(n) => n.into(),
        AMQPValue::ShortShortUInt(n) => n.into(),
        AMQPValue::ShortInt(n) => n.into(),
        AMQPValue::ShortUInt(n) => n.into(),
        AMQPValue::LongInt(n) => n.into(),
        AMQPValue::LongUInt(n) => n.into(),
        AMQPValue::LongLongInt(n) => n.into(),
        AMQPValue::Timestamp(n) => n.into(),
        _ => return None,
    };
    Some(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
}

/// A delay in whole milliseconds, rounded up (a delay is never shortened).
pub(crate) fn delay_ms(delay: Duration) -> u64 {
    let ms = delay.as_millis() + u128::from(!delay.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

/// The delay bucket of `ms`: `ms` rounded up to a number whose binary form has at most three
/// significant bits (…, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, …), so a bucket spans at most a
/// quarter of its lower bound. Messages of one bucket share a queue, where one can wait behind
/// another that expires later: a delayed redelivery is never early and at most ~25 % late.
pub(crate) fn bucket_ceiling(ms: u64) -> u64 {
    if ms <= 8 {
        return ms.max(1);
    }
    let shift = 64 - ms.leading_zeros() - 3;
    let unit = 1u64 << shift;
    ms.div_ceil(unit).saturating_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_up_by_at_most_a_quarter() {
        assert_eq!(bucket_ceiling(1), 1);
        assert_eq!(bucket_ceiling(7), 7);
        assert_eq!(bucket_ceiling(9), 10);
        assert_eq!(bucket_ceiling(200), 224);
        assert_eq!(bucket_ceiling(224), 224);
        assert_eq!(bucket_ceiling(1000), 1024);
        assert_eq!(bucket_ceiling(1025), 1280);
        for ms in (1..100_000u64).step_by(7).chain([u64::from(u32::MAX)]) {
            let c = bucket_ceiling(ms);
            assert!(c >= ms, "{ms} -> {c}");
            assert!(c * 4 <= ms * 5 + 4, "{ms} -> {c}");
            assert!(c.count_ones() <= 3, "{ms} -> {c}");
        }
        // Few distinct buckets: four per doubling.
        let buckets: std::collections::BTreeSet<u64> =
            (1..=60_000u64).map(bucket_ceiling).collect();
        assert!(buckets.len() < 70, "{}", buckets.len());
    }

    #[test]
    fn delays_round_up_to_milliseconds() {
        assert_eq!(delay_ms(Duration::from_millis(200)), 200);
        assert_eq!(delay_ms(Duration::from_micros(200_001)), 201);
        assert_eq!(delay_ms(Duration::from_nanos(1)), 1);
    }

    #[test]
    fn headers_round_trip() {
        let props = properties("k-é", 0);
        assert_eq!(key_of(&props), "k-é");
        assert_eq!(redeliveries_of(&props, false), 0);
        assert_eq!(redeliveries_of(&props, true), 1);
        let props = delayed_properties("k", 3, 224, 200);
        assert_eq!(key_of(&props), "k");
        assert_eq!(redeliveries_of(&props, false), 3);
        assert_eq!(props.expiration().as_ref().map(|e| e.as_str()), Some("200"));
        let mut headers = props.headers().clone().unwrap_or_default();
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
        let props = props.with_headers(headers);
        assert_eq!(redeliveries_of(&props, true), 5);
    }
}
