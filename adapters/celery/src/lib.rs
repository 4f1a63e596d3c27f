//! weir-adapter-celery: Celery tasks become weir runs, so a Celery shop can move tasks to weir
//! one at a time with its producers and `AsyncResult.get()` unchanged.
//!
//! Two adapters, one per broker Celery uses: [`CeleryAmqpAdapter`] (`celery+amqp://`,
//! RabbitMQ) and [`CeleryRedisAdapter`] (`celery+redis://`, kombu's Redis transport). Each takes
//! the tasks of one queue, decodes them ([`TaskMessage::decode`]), decides what to do with
//! each ([`intake::decide`]: run now or at its eta, revoke, hand on to the Celery workers, or
//! refuse with a reason), acks a message only once that is done, and writes each finished
//! run's result where the client reads it ([`finished`]: the Redis result backend or an
//! `rpc://` reply). docs/migrating-from-celery.md tells users how to move a task over.

pub mod amqp_adapter;
pub mod amqp_link;
pub mod amqp_message;
pub mod chain;
pub mod delayed_delivery;
pub mod finished;
pub mod intake;
pub mod ledger;
mod message;
pub mod progress_gate;
pub mod redis_adapter;
pub mod redis_envelope;
pub mod redis_queue;
pub mod results;
pub mod rpc_results;
pub mod settings;

pub use amqp_adapter::CeleryAmqpAdapter;
pub use message::{Refused, TaskMessage};
pub use redis_adapter::CeleryRedisAdapter;

/// How the adapter's Redis connections (the queue, the result backend) wait: a reply may take
/// up to 10 s (a 10 MiB message, a loaded server) before it counts as failed; the redis
/// crate's default, 500 ms, fails big messages on a busy machine.
pub(crate) fn redis_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
        .set_response_timeout(Some(std::time::Duration::from_secs(10)))
}
