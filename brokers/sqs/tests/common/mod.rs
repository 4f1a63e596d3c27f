//! Helpers shared by the integration tests (the broker helpers are weir-core's
//! `testkit::broker`).
#![allow(dead_code)]

pub mod proxy;

/// `WEIR_TEST_SQS_URL` with a prefix of its own (the URL's prefix plus a random suffix, so
/// every run gets fresh queues) and `params` appended. `None`: skip; panics under `CI=true`.
pub fn url_with(params: &str) -> Option<String> {
    let url = weir_core::testkit::service_url_with("WEIR_TEST_SQS_URL", params)?;
    let rest = url
        .strip_prefix("sqs://")
        .expect("WEIR_TEST_SQS_URL starts with sqs://");
    let (prefix, query) = rest.split_once('?').unwrap_or((rest, ""));
    let prefix = if prefix.is_empty() {
        "weirtest"
    } else {
        prefix
    };
    let prefix = format!(
        "{}-{:08x}",
        &prefix[..prefix.len().min(12)],
        rand::random::<u32>()
    );
    Some(format!("sqs://{prefix}?{query}"))
}
