//! A Celery message as RabbitMQ delivers it: the task protocol's headers are AMQP header
//! fields (py-amqp writes Python's `None` as void, ints as 32 or 64-bit, strings as long
//! strings, tuples as arrays), the body is the message's bytes.

use lapin::BasicProperties;
use lapin::types::AMQPValue;
use serde_json::{Map, Number, Value};

use crate::message::{Refused, TaskMessage};

/// Decodes a delivered message's properties and body.
pub fn decode(properties: &BasicProperties, body: &[u8]) -> Result<TaskMessage, Refused> {
    let headers = headers_of(properties);
    let text = |s: &Option<lapin::types::ShortString>| {
        s.as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default()
    };
    TaskMessage::decode(
        &headers,
        &text(properties.content_type()),
        &text(properties.content_encoding()),
        properties.reply_to().as_ref().map(|r| r.as_str()),
        body,
    )
}

/// The message's headers as JSON.
pub fn headers_of(properties: &BasicProperties) -> Map<String, Value> {
    properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), to_json(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// The properties of a task message to publish: its headers, JSON content, its id as
/// `correlation_id`, persistent.
pub fn properties_of(outgoing: &crate::chain::Outgoing) -> BasicProperties {
    let mut headers = lapin::types::FieldTable::default();
    for (k, v) in &outgoing.headers {
        headers.insert(k.as_str().into(), from_json(v));
    }
    let properties = BasicProperties::default()
        .with_headers(headers)
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_correlation_id(outgoing.id.as_str().into())
        .with_delivery_mode(2)
        .with_priority(outgoing.priority);
    match &outgoing.reply_to {
        Some(reply_to) => properties.with_reply_to(reply_to.as_str().into()),
        None => properties,
    }
}

/// JSON as an AMQP field value, as py-amqp writes Python values.
pub fn from_json(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(items) => {
            AMQPValue::FieldArray(items.iter().map(from_json).collect::<Vec<_>>().into())
        }
        Value::Object(map) => {
            let mut table = lapin::types::FieldTable::default();
            for (k, v) in map {
                table.insert(k.as_str().into(), from_json(v));
            }
            AMQPValue::FieldTable(table)
        }
    }
}

/// One AMQP field value as JSON (bytes as text when they are UTF-8, else as an array of
/// numbers; a decimal as a number).
pub fn to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        AMQPValue::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => {
            Number::from_f64(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
                .map_or(Value::Null, Value::Number)
        }
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => bytes(s.as_bytes()),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(to_json).collect())
        }
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), to_json(v)))
                .collect(),
        ),
        AMQPValue::ByteArray(b) => bytes(b.as_slice()),
        AMQPValue::Void => Value::Null,
    }
}

fn bytes(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => Value::Array(b.iter().map(|b| Value::from(*b)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, FieldTable, LongString};

    #[test]
    fn header_values_become_json() {
        let mut table = FieldTable::default();
        table.insert("eta".into(), AMQPValue::Void);
        table.insert("retries".into(), AMQPValue::LongLongInt(2));
        table.insert(
            "task".into(),
            AMQPValue::LongString(LongString::from("tasks.add")),
        );
        table.insert(
            "timelimit".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Void,
                AMQPValue::LongInt(5),
            ])),
        );
        let properties = BasicProperties::default().with_headers(table);
        let headers = headers_of(&properties);
        assert_eq!(
            Value::Object(headers),
            serde_json::json!({"eta": null, "retries": 2, "task": "tasks.add", "timelimit": [null, 5]})
        );
    }
}
