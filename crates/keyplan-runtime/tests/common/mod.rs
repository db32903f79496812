//! Helpers shared by the integration tests: accepts documents built with
//! `record`, as `keyplan apply` builds them.
#![allow(dead_code)]

use jiff::Timestamp;
use keyplan_runtime::record::{AcceptedKey, AcceptsDocument, KeyState, digest};

pub const K1: &str = "gateway-key-generation-1-aaaaaaaaaaaaaaaa";
pub const K2: &str = "gateway-key-generation-2-bbbbbbbbbbbbbbbb";
pub const R1: &str = "reporting-key-generation-1-cccccccccccccc";

/// One accepted key with the value `value`, staged now.
pub fn accepted(
    value: &str,
    generation: u64,
    state: KeyState,
    until: Option<Timestamp>,
) -> AcceptedKey {
    let now = Timestamp::now();
    AcceptedKey {
        id: format!("id-{generation}-{}", &digest(value.as_bytes())[..6]),
        generation,
        sha256: digest(value.as_bytes()),
        state,
        due: now,
        staged: now,
        until,
    }
}

/// The JSON `keyplan apply` writes for `keys`.
pub fn document(keys: Vec<AcceptedKey>) -> String {
    AcceptsDocument::new(keys).to_json().unwrap()
}

/// A document with only `value` as the current key.
pub fn current(value: &str) -> String {
    document(vec![accepted(value, 1, KeyState::Current, None)])
}
