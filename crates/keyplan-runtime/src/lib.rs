//! keyplan-runtime: what services and consumers link to use the API keys that
//! `keyplan apply` manages.
//!
//! [`record`] defines the store layout and the `accepts` format; the CLI uses
//! the same module, so the writer and every reader agree by construction.

pub mod record;
