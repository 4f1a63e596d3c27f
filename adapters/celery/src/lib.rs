//! weir-adapter-celery: Celery tasks become weir events, so a Celery shop can move tasks to
//! weir one at a time with its producers unchanged.
//!
//! This crate is being built in steps. What is here: the codec of Celery's task protocol v2
//! ([`TaskMessage::decode`]) for messages as RabbitMQ delivers them and as kombu's Redis
//! transport stores them ([`redis_envelope`]), the refusals of what weir does not take (protocol
//! v1, pickle/yaml/msgpack bodies, compressed bodies) with a reason, and the mapping of a task
//! to its event ([`TaskMessage::to_event`]), results written as a Celery worker writes them to
//! the Redis result backend ([`results`]), and taking messages from kombu's Redis lists
//! without losing one to a crash ([`redis_queue`]). What is not here yet: the adapter that
//! runs them (and RabbitMQ), `rpc://` results, chains; the crate registers no adapter until
//! it does.

pub mod amqp_adapter;
pub mod amqp_link;
pub mod amqp_message;
pub mod finished;
pub mod intake;
mod message;
pub mod redis_adapter;
pub mod redis_envelope;
pub mod redis_queue;
pub mod results;
pub mod rpc_results;

pub use amqp_adapter::CeleryAmqpAdapter;
pub use message::{Refused, TaskMessage};
pub use redis_adapter::CeleryRedisAdapter;
