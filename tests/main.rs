//! keyplan's integration tests: one binary, as ripgrep does (one link, one
//! moto server).

mod support;

mod cli;
mod cron;
// Needs the binary built with `--features failpoints` (scripts/test does).
#[cfg(feature = "failpoints")]
mod failpoints;
mod invalid_config;
mod leak;
mod plans;
#[cfg(feature = "failpoints")]
mod rotation_model;
mod runtime;
mod ssm;
