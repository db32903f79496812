//! keyplan: configuration as code for inter-service API keys.
//!
//! `keys.toml` declares services, the consumers allowed to call each, and
//! rotation schedules. `observe` reads the authority and the store,
//! `plan::plan` compares them with the declaration (pure, synchronous), and
//! `apply` walks the plan through the providers, deciding nothing.

pub mod apply;
pub mod backend;
pub mod cli;
pub mod config;
pub mod duration;
pub mod fusionauth_endpoints;
pub mod ids;
pub mod observe;
pub mod plan;
pub mod plan_file;
pub mod provider;
pub mod render;
pub mod secret;
pub mod staged;
