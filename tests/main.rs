//! keyplan's integration tests: one binary, as ripgrep does.

mod support;

mod cli;
// Needs the binary built with `--features failpoints` (scripts/test does).
#[cfg(feature = "failpoints")]
mod failpoints;
mod invalid_config;
mod leak;
