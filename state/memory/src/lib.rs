//! In-memory `StateStore` and `EventStore` for weir: the embedded default (`memory://`).
//!
//! Everything lives in one process behind a mutex that is never held across an `await`, so
//! every transition is atomic. Nothing survives a restart; use `weir-state-redis` for that.

mod catalog;
mod events;
mod jobs;
mod state;

pub use catalog::MemoryCatalog;
pub use events::{DEFAULT_EVENT_RETENTION, MemoryEventStore};
pub use jobs::MemoryJobStore;
pub use state::MemoryStateStore;
