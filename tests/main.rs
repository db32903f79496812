//! keyplan's integration tests: one binary (one link, one moto server).

mod ssm;
