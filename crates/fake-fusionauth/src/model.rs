//! What the fake keeps: keys, tenants, the clock, the faults and the request log.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What a key may call on FusionAuth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "endpoints")]
pub enum Permissions {
    /// No endpoint permissions: every endpoint ("super key").
    Super,
    /// Stored from `"permissions": {}` while [`Fault::EmptyPermissionsQuirk`]
    /// was active (FusionAuth issue #1675): shown as `{}`, and every use 401s.
    EmptyObject,
    /// Endpoint → methods; never empty (an empty map is [`Permissions::Super`]).
    Endpoints(BTreeMap<String, BTreeSet<String>>),
}

impl Permissions {
    /// Whether `self` grants nothing that `other` lacks ("equal or lesser authority").
    pub fn within(&self, other: &Permissions) -> bool {
        match (self, other) {
            (_, Permissions::Super) => true,
            (Permissions::Endpoints(mine), Permissions::Endpoints(theirs)) => {
                mine.iter().all(|(endpoint, methods)| {
                    theirs
                        .get(endpoint)
                        .is_some_and(|allowed| methods.is_subset(allowed))
                })
            }
            _ => false,
        }
    }

    /// Whether a call of `method` on the table endpoint `endpoint` is allowed.
    pub fn allows(&self, endpoint: &str, method: &str) -> bool {
        match self {
            Permissions::Super => true,
            Permissions::EmptyObject => false,
            Permissions::Endpoints(map) => map.get(endpoint).is_some_and(|m| m.contains(method)),
        }
    }
}

/// One API key as the fake stores it, key value included.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRecord {
    pub id: Uuid,
    /// The secret sent in `Authorization`. Never in Debug output.
    pub key: String,
    pub key_manager: bool,
    pub retrievable: bool,
    pub name: Option<String>,
    pub permissions: Permissions,
    /// `metaData.attributes`; `None` when absent or empty.
    pub attributes: Option<BTreeMap<String, String>>,
    pub tenant_id: Option<Uuid>,
    pub ip_access_control_list_id: Option<Uuid>,
    /// Epoch milliseconds; at or after it every use 401s.
    pub expiration_instant: Option<i64>,
    pub insert_instant: i64,
    pub last_update_instant: i64,
    /// Epoch milliseconds before which the key is not yet known to every node
    /// (a propagation delay): uses before it 401. `i64::MIN` without a delay.
    pub usable_from: i64,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("key", &"[redacted]")
            .field("key_manager", &self.key_manager)
            .field("retrievable", &self.retrievable)
            .field("name", &self.name)
            .field("permissions", &self.permissions)
            .field("attributes", &self.attributes)
            .field("tenant_id", &self.tenant_id)
            .field("ip_access_control_list_id", &self.ip_access_control_list_id)
            .field("expiration_instant", &self.expiration_instant)
            .field("insert_instant", &self.insert_instant)
            .field("last_update_instant", &self.last_update_instant)
            .field("usable_from", &self.usable_from)
            .finish()
    }
}

/// A key placed directly in the fake's store, as Kickstart or the admin UI would.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SeedKey {
    pub id: Option<Uuid>,
    pub key: String,
    pub key_manager: bool,
    pub name: Option<String>,
    /// `None`: a super key.
    pub endpoints: Option<BTreeMap<String, BTreeSet<String>>>,
    pub tenant_id: Option<Uuid>,
    pub expiration_instant: Option<i64>,
    pub retrievable: Option<bool>,
}

impl SeedKey {
    /// A global key-manager super key with this value.
    pub fn manager(key: &str) -> SeedKey {
        SeedKey {
            key: key.to_string(),
            key_manager: true,
            ..SeedKey::default()
        }
    }

    /// Limits the key to these endpoints and methods (else it is a super key).
    pub fn limited_to(mut self, endpoints: &[(&str, &[&str])]) -> SeedKey {
        self.endpoints = Some(
            endpoints
                .iter()
                .map(|(e, methods)| {
                    (
                        e.to_string(),
                        methods.iter().map(|m| m.to_string()).collect(),
                    )
                })
                .collect(),
        );
        self
    }

    /// Scopes the key to a tenant (the tenant is added if new).
    pub fn in_tenant(mut self, tenant: Uuid) -> SeedKey {
        self.tenant_id = Some(tenant);
        self
    }

    /// Expires the key at this instant (epoch milliseconds).
    pub fn expiring_at(mut self, epoch_millis: i64) -> SeedKey {
        self.expiration_instant = Some(epoch_millis);
        self
    }
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Op {
    /// `POST /api/api-key[/{id}]`
    Create,
    /// `GET /api/api-key/{id}`
    Retrieve,
    /// `PUT /api/api-key/{id}`
    Update,
    /// `PATCH /api/api-key/{id}`
    Patch,
    /// `DELETE /api/api-key/{id}`
    Delete,
    /// `GET /api/status`
    Status,
    /// Any other `/api` request.
    Other,
    /// Every `/api` request.
    Any,
}

impl Op {
    pub(crate) fn covers(self, op: Op) -> bool {
        self == Op::Any || self == op
    }
}

/// A misbehaviour to inject; see [`crate::FakeFusionAuth::inject`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Fault {
    /// Answer `status` without doing anything: 500 with an empty body, any
    /// other status (503) with an Errors body.
    Status { op: Op, status: u16 },
    /// Wait before handling.
    Latency { op: Op, millis: u64 },
    /// Commit a create, then close the connection without answering.
    DropAfterCommit,
    /// Keys created while active answer 401 for this long (key-cache propagation).
    PropagationDelay { millis: u64 },
    /// `"permissions": {}` in a create or PUT makes a key that shows `{}` and
    /// always 401s (issue #1675) instead of a super key.
    EmptyPermissionsQuirk,
    /// A unique-constraint violation (key, name, id) answers 500, empty body,
    /// instead of 400 `[duplicate]...`.
    DuplicateAs500,
    /// A create naming a tenant that does not exist answers 500 (issue #2749)
    /// instead of 400.
    UnknownTenantAs500,
}

/// An injected fault and how often it may still fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveFault {
    pub fault: Fault,
    /// `None`: until cleared; `Some(0)`: used up (kept so tests can read `hits`).
    pub remaining: Option<u32>,
    /// How often it fired.
    pub hits: u32,
}

impl ActiveFault {
    fn live(&self) -> bool {
        self.remaining != Some(0)
    }

    fn fire(&mut self) {
        self.hits += 1;
        if let Some(n) = self.remaining.as_mut() {
            *n = n.saturating_sub(1);
        }
    }
}

/// One request and the answer it got; `Authorization` and key values redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exchange {
    pub seq: u64,
    /// The fake's clock when the request arrived, epoch milliseconds.
    pub at: i64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names; `authorization` is `[redacted]`.
    pub headers: BTreeMap<String, String>,
    /// The key that authenticated the request, if one did.
    pub caller_key_id: Option<Uuid>,
    /// The body when it is JSON (with `apiKey.key` redacted).
    pub request_json: Option<Value>,
    /// The body when it is not empty and not JSON.
    pub request_text: Option<String>,
    /// `None` when the connection was dropped without an answer.
    pub status: Option<u16>,
    pub response_content_type: Option<String>,
    /// `None` for an empty body (with `apiKey.key` redacted).
    pub response_json: Option<Value>,
    /// The fault that shaped the answer, if any.
    pub fault: Option<Fault>,
}

impl Exchange {
    /// The request body's value at a JSON pointer, e.g. `/apiKey/permissions`.
    pub fn request_at(&self, pointer: &str) -> Option<&Value> {
        self.request_json.as_ref()?.pointer(pointer)
    }
}

/// The fake's notion of now.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Clock {
    /// The system clock moved by this many milliseconds.
    Real {
        offset: i64,
    },
    Fixed(i64),
}

impl Clock {
    pub(crate) fn now(self) -> i64 {
        match self {
            Clock::Real { offset } => system_millis() + offset,
            Clock::Fixed(ms) => ms,
        }
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        match self {
            Clock::Real { offset } => *offset += by,
            Clock::Fixed(ms) => *ms += by,
        }
    }
}

fn system_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Everything behind the fake's one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) keys: BTreeMap<Uuid, KeyRecord>,
    pub(crate) tenants: BTreeSet<Uuid>,
    pub(crate) faults: Vec<ActiveFault>,
    pub(crate) log: Vec<Exchange>,
    pub(crate) clock: Clock,
    pub(crate) next_seq: u64,
}

impl State {
    pub(crate) fn new(default_tenant: Uuid) -> State {
        State {
            keys: BTreeMap::new(),
            tenants: BTreeSet::from([default_tenant]),
            faults: Vec::new(),
            log: Vec::new(),
            clock: Clock::Real { offset: 0 },
            next_seq: 0,
        }
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Fires (and returns) the first live fault that `pick` accepts.
    pub(crate) fn fire<T>(&mut self, mut pick: impl FnMut(&Fault) -> Option<T>) -> Option<T> {
        for active in self.faults.iter_mut().filter(|f| f.live()) {
            if let Some(found) = pick(&active.fault) {
                active.fire();
                return Some(found);
            }
        }
        None
    }

    pub(crate) fn seed(&mut self, seed: SeedKey) -> KeyRecord {
        let now = self.now();
        let record = KeyRecord {
            id: seed.id.unwrap_or_else(Uuid::new_v4),
            key: seed.key,
            key_manager: seed.key_manager,
            retrievable: seed.retrievable.unwrap_or(true),
            name: seed.name,
            permissions: match seed.endpoints {
                Some(map) if !map.is_empty() => Permissions::Endpoints(map),
                _ => Permissions::Super,
            },
            attributes: None,
            tenant_id: seed.tenant_id,
            ip_access_control_list_id: None,
            expiration_instant: seed.expiration_instant,
            insert_instant: now,
            last_update_instant: now,
            // Seeded keys are known everywhere, whatever the clock says.
            usable_from: i64::MIN,
        };
        if let Some(tenant) = record.tenant_id {
            self.tenants.insert(tenant);
        }
        self.keys.insert(record.id, record.clone());
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(pairs: &[(&str, &[&str])]) -> Permissions {
        Permissions::Endpoints(
            pairs
                .iter()
                .map(|(e, ms)| (e.to_string(), ms.iter().map(|m| m.to_string()).collect()))
                .collect(),
        )
    }

    #[test]
    fn authority_is_a_subset_relation() {
        let caller = endpoints(&[("/api/user", &["GET", "POST"]), ("/api/status", &["GET"])]);
        assert!(endpoints(&[("/api/user", &["GET"])]).within(&caller));
        assert!(!endpoints(&[("/api/user", &["DELETE"])]).within(&caller));
        assert!(!endpoints(&[("/api/group", &["GET"])]).within(&caller));
        assert!(!Permissions::Super.within(&caller));
        assert!(Permissions::Super.within(&Permissions::Super));
        assert!(caller.within(&Permissions::Super));
    }

    #[test]
    fn a_super_key_allows_everything_and_the_quirk_nothing() {
        assert!(Permissions::Super.allows("/api/user", "DELETE"));
        assert!(!Permissions::EmptyObject.allows("/api/user", "GET"));
        assert!(endpoints(&[("/api/user", &["GET"])]).allows("/api/user", "GET"));
        assert!(!endpoints(&[("/api/user", &["GET"])]).allows("/api/user", "PUT"));
    }

    #[test]
    fn counted_faults_run_out_but_stay_listed() {
        let mut state = State::new(Uuid::new_v4());
        state.faults.push(ActiveFault {
            fault: Fault::DropAfterCommit,
            remaining: Some(1),
            hits: 0,
        });
        let pick = |f: &Fault| (*f == Fault::DropAfterCommit).then_some(());
        assert_eq!(state.fire(pick), Some(()));
        assert_eq!(state.fire(pick), None);
        assert_eq!(state.faults[0].hits, 1);
        assert_eq!(state.faults[0].remaining, Some(0));
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let mut state = State::new(Uuid::new_v4());
        let record = state.seed(SeedKey::manager("very-secret-value"));
        assert!(!format!("{record:?}").contains("very-secret-value"));
    }
}
