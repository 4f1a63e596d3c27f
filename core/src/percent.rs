//! Percent-encoding of URL parts (RFC 3986), for the driver URLs weir parses: user names,
//! passwords, hosts, paths and parameter values may need it.
//!
//! `+` is a plus sign, not a space (the form convention does not apply to URLs, and secrets
//! such as AWS keys hold `+`): a space is written `%20`.

use std::fmt;

/// Why a percent-encoded text does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::BadEscape => "bad percent-encoding (a % not followed by two hex digits)",
            DecodeError::NotUtf8 => "percent-encoding is not UTF-8",
        })
    }
}

impl std::error::Error for DecodeError {}

/// `text` with its `%XX` escapes decoded. The error never contains the text (it may be a
/// secret).
pub fn decode(text: &str) -> Result<String, DecodeError> {
    if !text.contains('%') {
        return Ok(text.to_owned());
    }
    let bytes = decode_bytes(text, false)?;
    String::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)
}

/// `text` with its valid `%XX` escapes decoded, anything else kept as it is (bytes that are
/// not UTF-8 replaced): for recognising names, never for values.
pub fn decode_lossy(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    match decode_bytes(text, true) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => text.to_owned(),
    }
}

/// Every byte of `text` but the unreserved characters (`A-Z a-z 0-9 - . _ ~`) as `%XX`.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The bytes `text` decodes to; a bad escape is an error unless `lenient` (then kept).
fn decode_bytes(text: &str, lenient: bool) -> Result<Vec<u8>, DecodeError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits (not `from_str_radix` alone: it takes a sign, `%+1`).
            let hex = match bytes.get(i + 1..i + 3) {
                Some(&[h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    Some(hex_value(h) << 4 | hex_value(l))
                }
                _ => None,
            };
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None if !lenient => return Err(DecodeError::BadEscape),
                None => {}
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Ok(out)
}

/// The value of an ASCII hex digit.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_plus() {
        assert_eq!(decode("a%2Fb%40c+d%20e").as_deref(), Ok("a/b@c+d e"));
        assert_eq!(decode("caf%C3%A9").as_deref(), Ok("café"));
        assert_eq!(decode("plain").as_deref(), Ok("plain"));
    }

    #[test]
    fn refuses_bad_escapes_and_non_utf8_without_echoing() {
        for bad in ["%", "%2", "%zz", "a%+1"] {
            assert_eq!(decode(bad), Err(DecodeError::BadEscape), "{bad}");
        }
        assert_eq!(decode("%FF"), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn lossy_keeps_what_does_not_decode() {
        assert_eq!(decode_lossy("sasl%2Epassword"), "sasl.password");
        assert_eq!(decode_lossy("100%"), "100%");
        assert_eq!(decode_lossy("%zz%41"), "%zzA");
    }

    #[test]
    fn encode_round_trips() {
        let text = "user/name@host?x=1&y=é ~._-";
        let encoded = encode(text);
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"%-._~".contains(&b))
        );
        assert_eq!(decode(&encoded).as_deref(), Ok(text));
    }
}
