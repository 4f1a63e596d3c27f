//! weir-support-redis: what weir's Redis state store (`weir-state-redis`) and Redis broker
//! (`weir-broker-redis`) share, written once: the [`client`] for a `redis://` or `rediss://`
//! URL, and the mapping of Redis errors onto weir's [`ErrorKind`](weir_core::ErrorKind)s
//! ([`classify`]).
//!
//! Each driver keeps its own messages and context around these (`redis broker: publish
//! failed`); URLs in errors and logs go through [`weir_core::redact::redact_url`].

mod client;
mod error;

pub use client::client;
pub use error::{classify, has_code, is_noscript};
