//! The SSM store and its lock: the lock algorithm against an in-memory fake
//! with a chosen order of operations, the wire against moto (one server per
//! test binary, tests isolated by environment name) and a scripted HTTP
//! server for what moto cannot do (short pages, throttling).

pub mod cli;
mod fake;
mod lock_race;
pub mod moto;
mod scripted;
