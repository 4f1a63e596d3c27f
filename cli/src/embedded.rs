//! What an engine is built from: URLs and options (see [`crate::App::build_engine`]).

use weir_core::engine::EngineConfig;

/// Options for [`crate::App::build_engine`].
#[derive(Clone)]
pub struct EngineOptions {
    /// State store URL (`memory://`).
    pub state_url: String,
    /// Broker URL (`memory://`).
    pub broker_url: String,
    /// Key signing HTTP step requests (`X-Weir-Signature`); none = unsigned.
    pub signing_key: Option<String>,
    /// Engine tunables.
    pub config: EngineConfig,
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("state_url", &weir_core::redact::redact_url(&self.state_url))
            .field(
                "broker_url",
                &weir_core::redact::redact_url(&self.broker_url),
            )
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .field("config", &self.config)
            .finish()
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            state_url: "memory://".into(),
            broker_url: "memory://".into(),
            signing_key: None,
            config: EngineConfig::default(),
        }
    }
}
