//! The runtime half of the wire contract, shared by adapters and router (feature `amqp`):
//! the `[amqp]` config section, a connector that retries with backoff, confirmed publishing
//! that treats a returned message as a failure, the topology, and process start-up (tracing,
//! stop on SIGTERM).
//!
//! lapin's own automatic recovery is not used (lapin issues #312, #450): callers rebuild the
//! connection, channels and consumers through [`connect::Connector`] whenever one fails.
pub mod config;
pub mod connect;
pub mod headers;
pub mod process;
pub mod publish;
pub mod seal;
pub mod topology;

pub use config::AmqpConfig;
pub use connect::Connector;
pub use publish::{OutgoingMessage, PublishError};
