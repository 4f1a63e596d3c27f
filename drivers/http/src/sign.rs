//! Request signing: `X-Weir-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Weir-Signature";

/// A sensible `tolerance` for [`verify`]: five minutes either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &str, ts: u64, body: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at `ts` (unix seconds): `t=<ts>,v1=<hex>`.
pub fn sign(key: &str, ts: u64, body: &[u8]) -> String {
    format!(
        "t={ts},v1={}",
        hex::encode(mac(key, ts, body).finalize().into_bytes())
    )
}

/// Whether `header_value` is a valid signature of `body` under `key`, made within `tolerance`
/// of `now` (unix seconds). Any of several `v1=` entries may match (key rotation); the
/// comparison is constant-time.
pub fn verify(key: &str, header_value: &str, body: &[u8], now: u64, tolerance: Duration) -> bool {
    let mut ts = None;
    let mut signatures = Vec::new();
    for part in header_value.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => ts = v.parse::<u64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let Some(ts) = ts else { return false };
    if now.abs_diff(ts) > tolerance.as_secs() {
        return false;
    }
    signatures
        .iter()
        .any(|sig| hex::decode(sig).is_ok_and(|raw| mac(key, ts, body).verify_slice(&raw).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "whsec_test";
    const BODY: &[u8] = br#"{"a":1}"#;

    #[test]
    fn matches_a_reference_hmac() {
        // python3: hmac.new(b"whsec_test", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            sign(KEY, 1_700_000_000, BODY),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }

    #[test]
    fn verifies_only_the_right_key_body_and_time() {
        let header = sign(KEY, 1_000, BODY);
        assert!(verify(KEY, &header, BODY, 1_000, DEFAULT_TOLERANCE));
        assert!(verify(KEY, &header, BODY, 1_300, DEFAULT_TOLERANCE));
        assert!(!verify(KEY, &header, BODY, 1_301, DEFAULT_TOLERANCE));
        assert!(!verify(
            KEY,
            &header,
            br#"{"a":2}"#,
            1_000,
            DEFAULT_TOLERANCE
        ));
        assert!(!verify("other", &header, BODY, 1_000, DEFAULT_TOLERANCE));
        let rotated = format!("{},v1=00ff", sign("old", 1_000, BODY));
        assert!(verify("old", &rotated, BODY, 1_000, DEFAULT_TOLERANCE));
        let tampered_time = header.replace("t=1000", "t=1001");
        assert!(!verify(KEY, &tampered_time, BODY, 1_000, DEFAULT_TOLERANCE));
        for junk in ["", "t=1000", "v1=abc", "t=x,v1=00", "garbage"] {
            assert!(!verify(KEY, junk, BODY, 1_000, DEFAULT_TOLERANCE), "{junk}");
        }
    }
}
