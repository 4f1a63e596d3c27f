//! The handshake: the server's `HI` and the client's `HELLO`, with Faktory's password check.
//!
//! With a password the greeting carries a random salt `s` and an iteration count `i`; the
//! client answers `pwdhash` = SHA-256 of password + salt, hashed again `i - 1` times over the
//! raw digest, in lowercase hex. A client whose HELLO has no `v` (or `v` < 2) is checked with
//! one round, as Faktory's server does: the Python client ignores `i`.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What the server asks of a connecting client.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// The salt and iteration count, when a password is set.
    pub salted: Option<(String, u32)>,
}

impl Challenge {
    /// A fresh challenge: a random salt and 4,000 to 8,095 iterations when `password` is set
    /// (as Faktory picks them).
    pub fn new(password_set: bool) -> Challenge {
        let salted = password_set.then(|| {
            let salt = format!("{:x}", rand::random::<u64>() >> 1);
            let iterations = 4000 + rand::random_range(0..4096u32);
            (salt, iterations)
        });
        Challenge { salted }
    }

    /// The greeting line's text, compact (the Node client splits the line on spaces):
    /// `HI {"v":2}` or `HI {"v":2,"i":N,"s":"salt"}`.
    pub fn greeting(&self) -> String {
        match &self.salted {
            None => r#"HI {"v":2}"#.to_string(),
            Some((salt, iterations)) => format!(r#"HI {{"v":2,"i":{iterations},"s":"{salt}"}}"#),
        }
    }

    /// Whether `hello` proves it knows `password` (always true when none is set).
    pub fn accepts(&self, password: Option<&str>, hello: &Hello) -> bool {
        let (Some(password), Some((salt, iterations))) = (password, &self.salted) else {
            return true;
        };
        let Some(given) = hello.pwdhash.as_deref() else {
            return false;
        };
        let rounds = if hello.v.unwrap_or(0) < 2 {
            1
        } else {
            *iterations
        };
        let expected = password_hash(password, salt, rounds);
        constant_time_eq(expected.as_bytes(), given.to_ascii_lowercase().as_bytes())
    }
}

/// The fields of a HELLO weir reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Hello {
    /// The worker id: empty or absent for a producer's connection.
    #[serde(default)]
    pub wid: Option<String>,
    /// The client's host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The client's protocol version (absent: before 2).
    #[serde(default)]
    pub v: Option<u8>,
    /// The password proof.
    #[serde(default)]
    pub pwdhash: Option<String>,
}

/// SHA-256 of `password` + `salt`, hashed `rounds` times in all, in lowercase hex.
pub fn password_hash(password: &str, salt: &str, rounds: u32) -> String {
    let mut digest = Sha256::new()
        .chain_update(password.as_bytes())
        .chain_update(salt.as_bytes())
        .finalize();
    for _ in 1..rounds {
        digest = Sha256::digest(digest);
    }
    hex::encode(digest)
}

/// Compares without stopping at the first difference (a password check's time says nothing).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_iterated_over_the_raw_digest() {
        // sha256("secret" + "salt") once:
        assert_eq!(
            password_hash("secret", "salt", 1),
            hex::encode(Sha256::digest(b"secretsalt"))
        );
        let twice = hex::encode(Sha256::digest(Sha256::digest(b"secretsalt")));
        assert_eq!(password_hash("secret", "salt", 2), twice);
    }

    #[test]
    fn a_v2_client_hashes_i_times_and_an_older_one_once() {
        let challenge = Challenge {
            salted: Some(("5a1t".into(), 4321)),
        };
        assert_eq!(
            challenge.greeting(),
            r#"HI {"v":2,"i":4321,"s":"5a1t"}"#,
            "compact, keys in Faktory's order"
        );
        let hello = |v: Option<u8>, rounds: u32| Hello {
            v,
            pwdhash: Some(password_hash("pw", "5a1t", rounds)),
            ..Hello::default()
        };
        assert!(challenge.accepts(Some("pw"), &hello(Some(2), 4321)));
        assert!(!challenge.accepts(Some("pw"), &hello(Some(2), 1)));
        assert!(challenge.accepts(Some("pw"), &hello(None, 1)), "Python");
        assert!(!challenge.accepts(Some("other"), &hello(None, 1)));
        assert!(!challenge.accepts(Some("pw"), &Hello::default()), "no hash");
    }

    #[test]
    fn without_a_password_anyone_is_let_in() {
        let challenge = Challenge::new(false);
        assert_eq!(challenge.greeting(), r#"HI {"v":2}"#);
        assert!(challenge.accepts(None, &Hello::default()));
        let salted = Challenge::new(true);
        let (salt, iterations) = salted.salted.clone().expect("salted");
        assert!((4000..8096).contains(&iterations));
        assert!(!salt.is_empty() && salt.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            salted.greeting().matches(' ').count(),
            1,
            "one space, after HI"
        );
    }
}
