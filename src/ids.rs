//! Authority key ids and names, chosen by keyplan before it mints.
//!
//! FusionAuth has no API to list keys, so keyplan finds its keys only through
//! ids it recorded. An id is a UUIDv5 in the environment's namespace of the
//! edge, the instant of the plan, the generation, the attempt, and the lock id
//! of the last apply that wrote anything: it never repeats, not after a
//! re-mint, and not for an edge revoked and re-added within the same instant
//! (its generations start again at 1, but an apply came in between).

use jiff::Timestamp;
use uuid::Uuid;

use crate::config::Edge;

/// The id of one attempt at minting one generation of an edge.
pub fn key_id(
    namespace: &Uuid,
    edge: &Edge,
    created: Timestamp,
    generation: u64,
    attempt: u32,
    last_apply: &str,
) -> String {
    let name = format!(
        "{}\n{}\n{}\n{generation}\n{attempt}\n{last_apply}",
        edge.service,
        edge.consumer,
        created.as_nanosecond()
    );
    Uuid::new_v5(namespace, name.as_bytes()).to_string()
}

/// The key's name in the authority (unique, at most 191 characters in FusionAuth).
pub fn key_name(namespace: &Uuid, edge: &Edge, generation: u64) -> String {
    format!("keyplan/{namespace}/{edge}/gen={generation}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_by_every_input() {
        let ns = Uuid::new_v4();
        let e = Edge::new("s", "c");
        let t: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let base = key_id(&ns, &e, t, 1, 0, "");
        assert_eq!(base, key_id(&ns, &e, t, 1, 0, ""));
        assert_ne!(base, key_id(&ns, &e, t, 1, 1, ""));
        assert_ne!(base, key_id(&ns, &e, t, 2, 0, ""));
        assert_ne!(
            base,
            key_id(&ns, &e, "2027-01-01T00:00:01Z".parse().unwrap(), 1, 0, "")
        );
        assert_ne!(base, key_id(&ns, &Edge::new("s", "d"), t, 1, 0, ""));
        assert_ne!(base, key_id(&Uuid::new_v4(), &e, t, 1, 0, ""));
        assert_ne!(base, key_id(&ns, &e, t, 1, 0, "another-apply"));
    }
}
