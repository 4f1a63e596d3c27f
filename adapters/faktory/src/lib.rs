//! weir-adapter-faktory: a Faktory server inside weir, so Faktory clients in any language push
//! jobs to weir unchanged, and a job type moves to weir by adding a function triggered by
//! `faktory/<jobtype>`.
//!
//! [`FaktoryAdapter`] listens on the address of its `faktory://` URL ([`settings`]), greets
//! each client and checks its password as Faktory does ([`auth`]), reads one command per line
//! ([`resp`], [`command`]) and answers each with one reply ([`connection`], [`server`]). A
//! pushed job ([`job`]) whose type a weir function handles becomes the event
//! `faktory/<jobtype>` with the jid as its id, and runs as a weir run.

pub mod adapter;
pub mod auth;
pub mod command;
pub mod connection;
pub mod job;
pub mod legacy;
pub mod mutate;
pub mod resp;
pub mod server;
pub mod settings;
pub mod tls;

pub use adapter::FaktoryAdapter;
