//! Redis `StateStore` and `EventStore` for weir (`redis://…`): the state of many `weir serve`
//! processes sharing one Redis.
//!
//! Every transition that must happen once is one Lua script on the run's hash, so two nodes
//! racing on it cannot both win. One run's keys share a hash tag (`{r:<run id>}`), so the
//! scripts also work on Redis Cluster. Jobs for outside workers ([`RedisJobStore`], the
//! state store's `jobs()` capability) keep every key under the hash tag `{jobs}`, and each move
//! of a job is one script. The catalog of pushed event schemas ([`RedisCatalog`], `catalog()`)
//! keeps its keys under `{catalog}`. See the README for the key layout.

mod catalog;
mod config;
mod conn;
mod dead;
mod events;
mod jobs;
mod keys;
mod pauses;
mod scripts;
mod state;

pub use catalog::RedisCatalog;
pub use config::RedisStateConfig;
pub use conn::RedisConn;
pub use events::RedisEventStore;
pub use jobs::RedisJobStore;
pub use state::RedisStateStore;

/// Opens both stores on one connection.
pub async fn open(url: &str) -> weir_core::Result<(RedisStateStore, RedisEventStore)> {
    let config = RedisStateConfig::from_url(url)?;
    let conn = RedisConn::connect(&config).await?;
    Ok((
        RedisStateStore::new(conn.clone(), &config),
        RedisEventStore::new(conn, &config),
    ))
}
