//! FusionAuth's answers, computed from the state under its lock. No I/O here:
//! the server module turns an [`Outcome`] into bytes (or a dropped connection).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::endpoints;
use crate::model::{Fault, KeyRecord, Op, Permissions, State};

/// The FusionAuth version the fake answers as.
pub const VERSION: &str = "1.69.0";

/// The longest key value or name: both are `VARCHAR(191)` columns.
pub const MAX_LEN: usize = 191;

const API_KEY: &str = "/api/api-key";

/// A request as the handlers need it.
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) authorization: Option<&'a str>,
    pub(crate) tenant_header: Option<&'a str>,
    pub(crate) content_type: Option<&'a str>,
    pub(crate) body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Empty(u16),
    Json(u16, Value),
}

impl Reply {
    fn unauthorized() -> Reply {
        Reply::Empty(401)
    }

    fn not_found() -> Reply {
        Reply::Empty(404)
    }
}

#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) reply: Reply,
    pub(crate) caller: Option<Uuid>,
    pub(crate) drop_connection: bool,
    pub(crate) fault: Option<Fault>,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        Outcome {
            reply,
            caller: None,
            drop_connection: false,
            fault: None,
        }
    }
}

/// Which operation a request is, for matching faults.
pub(crate) fn classify(method: &str, path: &str) -> Op {
    if path == "/api/status" {
        return Op::Status;
    }
    if path == API_KEY || path.starts_with("/api/api-key/") {
        return match method {
            "POST" => Op::Create,
            "GET" => Op::Retrieve,
            "PUT" => Op::Update,
            "PATCH" => Op::Patch,
            "DELETE" => Op::Delete,
            _ => Op::Other,
        };
    }
    Op::Other
}

/// FusionAuth's Errors document: `fieldErrors` keyed by field path, `generalErrors` a list.
#[derive(Debug, Default)]
struct Errors {
    field: BTreeMap<String, Vec<Value>>,
    general: Vec<Value>,
}

impl Errors {
    fn field(&mut self, path: &str, reason: &str, message: String) {
        self.field
            .entry(path.to_string())
            .or_default()
            .push(json!({"code": format!("[{reason}]{path}"), "message": message}));
    }

    fn general(&mut self, code: &str, message: String) {
        self.general
            .push(json!({"code": format!("[{code}]"), "message": message}));
    }

    fn is_empty(&self) -> bool {
        self.field.is_empty() && self.general.is_empty()
    }

    fn has_duplicate(&self) -> bool {
        self.field.values().flatten().any(|e| {
            e["code"]
                .as_str()
                .is_some_and(|c| c.starts_with("[duplicate]"))
        })
    }

    fn reply(self) -> Reply {
        Reply::Json(
            400,
            json!({"fieldErrors": self.field, "generalErrors": self.general}),
        )
    }
}

fn general_error(code: &str, message: String) -> Reply {
    let mut errors = Errors::default();
    errors.general(code, message);
    errors.reply()
}

fn invalid_json(message: String) -> Reply {
    general_error("invalidJSON", message)
}

fn conversion_error(property: &str) -> Reply {
    invalid_json(format!(
        "Invalid JSON in the request body. The property was [{property}]. The error was [Possible conversion error]."
    ))
}

/// `permissions` of a request.
#[derive(Debug, Clone, PartialEq)]
enum PermissionsInput {
    Absent,
    /// `"permissions": {}`: the object without `endpoints`.
    EmptyObject,
    Endpoints(BTreeMap<String, BTreeSet<String>>),
}

/// The `apiKey` object of a request, parsed.
#[derive(Debug, Default)]
struct Input {
    key: Option<String>,
    name: Option<String>,
    retrievable: Option<bool>,
    tenant_id: Option<Uuid>,
    ip_acl: Option<Uuid>,
    expiration: Option<i64>,
    attributes: Option<BTreeMap<String, String>>,
    permissions: Option<PermissionsInput>,
}

const API_KEY_FIELDS: [&str; 12] = [
    "id",
    "key",
    "keyManager",
    "retrievable",
    "name",
    "metaData",
    "permissions",
    "tenantId",
    "ipAccessControlListId",
    "expirationInstant",
    "insertInstant",
    "lastUpdateInstant",
];

fn present<'v>(object: &'v Map<String, Value>, field: &str) -> Option<&'v Value> {
    object.get(field).filter(|v| !v.is_null())
}

fn string_field(object: &Map<String, Value>, field: &str) -> Result<Option<String>, Reply> {
    match present(object, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(conversion_error(&format!("apiKey.{field}"))),
    }
}

fn uuid_field(object: &Map<String, Value>, field: &str) -> Result<Option<Uuid>, Reply> {
    match string_field(object, field)? {
        None => Ok(None),
        Some(s) => Uuid::parse_str(&s)
            .map(Some)
            .map_err(|_| conversion_error(&format!("apiKey.{field}"))),
    }
}

fn unknown_property(property: &str) -> Reply {
    invalid_json(format!(
        "Invalid JSON in the request body. The property was [{property}]. The error was [Unrecognized property]."
    ))
}

fn parse_input(object: &Map<String, Value>) -> Result<Input, Reply> {
    if let Some(extra) = object
        .keys()
        .find(|k| !API_KEY_FIELDS.contains(&k.as_str()))
    {
        return Err(unknown_property(&format!("apiKey.{extra}")));
    }
    let mut input = Input {
        key: string_field(object, "key")?,
        name: string_field(object, "name")?,
        tenant_id: uuid_field(object, "tenantId")?,
        ip_acl: uuid_field(object, "ipAccessControlListId")?,
        ..Input::default()
    };
    input.retrievable = match present(object, "retrievable") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(conversion_error("apiKey.retrievable")),
    };
    input.expiration = match present(object, "expirationInstant") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| conversion_error("apiKey.expirationInstant"))?,
        ),
    };
    if let Some(meta) = present(object, "metaData") {
        let meta = meta
            .as_object()
            .ok_or_else(|| conversion_error("apiKey.metaData"))?;
        if let Some(extra) = meta.keys().find(|k| *k != "attributes") {
            return Err(unknown_property(&format!("apiKey.metaData.{extra}")));
        }
        if let Some(attributes) = present(meta, "attributes") {
            let attributes = attributes
                .as_object()
                .ok_or_else(|| conversion_error("apiKey.metaData.attributes"))?;
            let mut map = BTreeMap::new();
            for (name, value) in attributes {
                let value = value.as_str().ok_or_else(|| {
                    conversion_error(&format!("apiKey.metaData.attributes.{name}"))
                })?;
                map.insert(name.clone(), value.to_string());
            }
            input.attributes = Some(map);
        }
    }
    if let Some(permissions) = present(object, "permissions") {
        let permissions = permissions
            .as_object()
            .ok_or_else(|| conversion_error("apiKey.permissions"))?;
        if let Some(extra) = permissions.keys().find(|k| *k != "endpoints") {
            return Err(unknown_property(&format!("apiKey.permissions.{extra}")));
        }
        input.permissions = Some(match present(permissions, "endpoints") {
            None => PermissionsInput::EmptyObject,
            Some(endpoints) => {
                let endpoints = endpoints
                    .as_object()
                    .ok_or_else(|| conversion_error("apiKey.permissions.endpoints"))?;
                let mut map = BTreeMap::new();
                for (endpoint, methods) in endpoints {
                    let property = format!("apiKey.permissions.endpoints.{endpoint}");
                    let methods = methods
                        .as_array()
                        .ok_or_else(|| conversion_error(&property))?;
                    let mut set = BTreeSet::new();
                    for method in methods {
                        set.insert(
                            method
                                .as_str()
                                .ok_or_else(|| conversion_error(&property))?
                                .to_string(),
                        );
                    }
                    map.insert(endpoint.clone(), set);
                }
                PermissionsInput::Endpoints(map)
            }
        });
    }
    Ok(input)
}

/// The request body as a JSON object (an empty body is `{}`).
fn parse_body(request: &Request<'_>) -> Result<Map<String, Value>, Reply> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let json_type = request.content_type.is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.starts_with("application/json") || ct.starts_with("application/merge-patch+json")
    });
    if !json_type {
        return Err(general_error(
            "InvalidContentType",
            "A request body must be sent with Content-Type: application/json.".to_string(),
        ));
    }
    match serde_json::from_slice::<Value>(request.body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(invalid_json(
            "Invalid JSON in the request body. The request body must be a JSON object.".into(),
        )),
        Err(e) => Err(invalid_json(format!(
            "Invalid JSON in the request body. Unable to parse it: [{e}]."
        ))),
    }
}

/// The `apiKey` object of a request document, checking the top level.
fn api_key_object(root: &Map<String, Value>) -> Result<Option<Map<String, Value>>, Reply> {
    if let Some(extra) = root.keys().find(|k| *k != "apiKey" && *k != "sourceKeyId") {
        return Err(unknown_property(extra));
    }
    match present(root, "apiKey") {
        None => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object.clone())),
        Some(_) => Err(conversion_error("apiKey")),
    }
}

/// Methods in a fixed order that is not alphabetical, as FusionAuth's own
/// samples are: a client must compare them as sets.
fn method_rank(method: &str) -> usize {
    ["DELETE", "POST", "GET", "PUT", "PATCH"]
        .iter()
        .position(|m| *m == method)
        .unwrap_or(usize::MAX)
}

fn render_permissions(permissions: &Permissions) -> Option<Value> {
    match permissions {
        Permissions::Super => None,
        Permissions::EmptyObject => Some(json!({})),
        Permissions::Endpoints(map) => {
            let endpoints: Map<String, Value> = map
                .iter()
                .map(|(endpoint, methods)| {
                    let mut methods: Vec<&String> = methods.iter().collect();
                    methods.sort_by_key(|m| method_rank(m));
                    (endpoint.clone(), json!(methods))
                })
                .collect();
            Some(json!({ "endpoints": endpoints }))
        }
    }
}

/// The `apiKey` object of a response.
pub(crate) fn render(record: &KeyRecord, with_key: bool) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(record.id));
    out.insert("insertInstant".into(), json!(record.insert_instant));
    out.insert(
        "lastUpdateInstant".into(),
        json!(record.last_update_instant),
    );
    out.insert("keyManager".into(), json!(record.key_manager));
    out.insert("retrievable".into(), json!(record.retrievable));
    if with_key {
        out.insert("key".into(), json!(record.key));
    }
    if let Some(name) = &record.name {
        out.insert("name".into(), json!(name));
    }
    if let Some(attributes) = &record.attributes {
        out.insert("metaData".into(), json!({ "attributes": attributes }));
    }
    if let Some(permissions) = render_permissions(&record.permissions) {
        out.insert("permissions".into(), permissions);
    }
    if let Some(tenant) = record.tenant_id {
        out.insert("tenantId".into(), json!(tenant));
    }
    if let Some(acl) = record.ip_access_control_list_id {
        out.insert("ipAccessControlListId".into(), json!(acl));
    }
    if let Some(expiration) = record.expiration_instant {
        out.insert("expirationInstant".into(), json!(expiration));
    }
    Value::Object(out)
}

fn key_reply(record: &KeyRecord, with_key: bool) -> Reply {
    Reply::Json(200, json!({ "apiKey": render(record, with_key) }))
}

/// A fresh key value: 42 random bytes, URL-safe base64 without padding (56 characters).
pub(crate) fn generate_key() -> String {
    let mut bytes = [0u8; 42];
    getrandom::fill(&mut bytes).expect("the OS random number generator");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The caller, once authenticated.
#[derive(Debug, Clone)]
struct Caller {
    id: Uuid,
    key_manager: bool,
    tenant: Option<Uuid>,
    permissions: Permissions,
}

impl State {
    /// Answers one `/api` request.
    pub(crate) fn handle(&mut self, request: &Request<'_>) -> Outcome {
        let path = request.path;
        if path == "/api/status" {
            self.status(request).into()
        } else if path == API_KEY || path.starts_with("/api/api-key/") {
            self.api_key(request)
        } else if path.starts_with("/api/") {
            self.other_endpoint(request)
        } else {
            Reply::not_found().into()
        }
    }

    /// The key named by `Authorization`, if it may be used now.
    fn authenticate(&self, request: &Request<'_>) -> Option<Caller> {
        let value = request.authorization?;
        let record = self.keys.values().find(|k| k.key == value)?;
        let now = self.now();
        let expired = record.expiration_instant.is_some_and(|at| at <= now);
        let unknown_yet = record.usable_from > now;
        let broken = record.permissions == Permissions::EmptyObject;
        if expired || unknown_yet || broken {
            return None;
        }
        Some(Caller {
            id: record.id,
            key_manager: record.key_manager,
            tenant: record.tenant_id,
            permissions: record.permissions.clone(),
        })
    }

    /// The tenant a request is scoped to: the key's, else `X-FusionAuth-TenantId`.
    fn request_tenant(
        &self,
        caller: &Caller,
        request: &Request<'_>,
    ) -> Result<Option<Uuid>, Reply> {
        let Some(header) = request.tenant_header else {
            return Ok(caller.tenant);
        };
        let invalid = || {
            general_error(
                "InvalidTenantId",
                format!(
                    "The X-FusionAuth-TenantId header value [{header}] is not the Id of an existing tenant."
                ),
            )
        };
        let tenant = Uuid::parse_str(header.trim()).map_err(|_| invalid())?;
        if !self.tenants.contains(&tenant) {
            return Err(invalid());
        }
        match caller.tenant {
            Some(own) if own != tenant => Err(Reply::unauthorized()),
            _ => Ok(Some(tenant)),
        }
    }

    fn status(&mut self, request: &Request<'_>) -> Reply {
        if request.method != "GET" {
            return Reply::Empty(405);
        }
        if request.authorization.is_none() {
            return Reply::Json(200, json!({"status": "ok"}));
        }
        let Some(caller) = self.authenticate(request) else {
            return Reply::unauthorized();
        };
        let tenant = match self.request_tenant(&caller, request) {
            Ok(tenant) => tenant,
            Err(reply) => return reply,
        };
        // /api/status is a "global" endpoint.
        if tenant.is_some() || !caller.permissions.allows("/api/status", "GET") {
            return Reply::unauthorized();
        }
        Reply::Json(200, json!({"status": "ok", "version": VERSION}))
    }

    fn other_endpoint(&mut self, request: &Request<'_>) -> Outcome {
        let Some(caller) = self.authenticate(request) else {
            return Reply::unauthorized().into();
        };
        let mut outcome = Outcome::from(self.other_endpoint_as(&caller, request));
        outcome.caller = Some(caller.id);
        outcome
    }

    fn other_endpoint_as(&self, caller: &Caller, request: &Request<'_>) -> Reply {
        let tenant = match self.request_tenant(caller, request) {
            Ok(tenant) => tenant,
            Err(reply) => return reply,
        };
        let Some(endpoint) = endpoints::matching(request.path) else {
            return Reply::not_found();
        };
        if tenant.is_some() && !endpoint.tenant {
            return Reply::unauthorized();
        }
        if !caller.permissions.allows(&endpoint.url, request.method) {
            return Reply::unauthorized();
        }
        if !endpoint.methods.iter().any(|m| m == request.method) {
            return Reply::Empty(405);
        }
        if endpoint.url == "/api/system/version" && request.path == endpoint.url {
            return Reply::Json(200, json!({"version": VERSION}));
        }
        // The fake keeps no users, applications, ...: nothing is ever found.
        Reply::not_found()
    }

    fn api_key(&mut self, request: &Request<'_>) -> Outcome {
        let Some(caller) = self.authenticate(request) else {
            return Reply::unauthorized().into();
        };
        let reply = if caller.key_manager {
            self.api_key_as(&caller, request)
        } else {
            Ok(Reply::unauthorized().into())
        };
        let mut outcome = reply.unwrap_or_else(Outcome::from);
        outcome.caller = Some(caller.id);
        outcome
    }

    fn api_key_as(&mut self, caller: &Caller, request: &Request<'_>) -> Result<Outcome, Reply> {
        let tenant = self.request_tenant(caller, request)?;
        let rest = request.path[API_KEY.len()..].trim_start_matches('/');
        let id = match rest {
            "" => None,
            segment if !segment.contains('/') => Some(Uuid::parse_str(segment).map_err(|_| {
                let mut errors = Errors::default();
                errors.field(
                    "keyId",
                    "couldNotConvert",
                    format!("Invalid keyId [{segment}]. This must be a valid UUID String."),
                );
                errors.reply()
            })?),
            _ => return Err(Reply::not_found()),
        };
        match (request.method, id) {
            ("POST", id) => self.create(caller, tenant, id, request),
            // No list of API keys, by FusionAuth's design.
            ("GET" | "PUT" | "PATCH" | "DELETE", None) => Err(Reply::not_found()),
            ("GET", Some(id)) => {
                let target = self.visible(id, tenant)?;
                authorize(target.permissions.within(&caller.permissions))?;
                Ok(key_reply(target, target.retrievable).into())
            }
            ("PUT", Some(id)) => {
                let root = parse_body(request)?;
                self.update(caller, tenant, id, root)
            }
            ("PATCH", Some(id)) => self.patch(caller, tenant, id, request),
            ("DELETE", Some(id)) => {
                let target = self.visible(id, tenant)?;
                authorize(target.permissions.within(&caller.permissions))?;
                self.keys.remove(&id);
                Ok(Reply::Empty(200).into())
            }
            _ => Err(Reply::Empty(405)),
        }
    }

    /// The key `id` if the request's tenant may see it; 404 otherwise.
    fn visible(&self, id: Uuid, tenant: Option<Uuid>) -> Result<&KeyRecord, Reply> {
        self.keys
            .get(&id)
            .filter(|k| tenant.is_none() || k.tenant_id == tenant)
            .ok_or_else(Reply::not_found)
    }

    /// The stored permissions for a request's `permissions`, checking endpoint names.
    fn permissions_from(
        &mut self,
        input: Option<&PermissionsInput>,
        errors: &mut Errors,
    ) -> Permissions {
        match input {
            None => Permissions::Super,
            Some(PermissionsInput::Absent) => Permissions::Super,
            Some(PermissionsInput::EmptyObject) => {
                let quirk = self.fire(|f| (*f == Fault::EmptyPermissionsQuirk).then_some(()));
                if quirk.is_some() {
                    Permissions::EmptyObject
                } else {
                    Permissions::Super
                }
            }
            Some(PermissionsInput::Endpoints(map)) if map.is_empty() => Permissions::Super,
            Some(PermissionsInput::Endpoints(map)) => {
                for (endpoint, methods) in map {
                    let known = endpoints::named(endpoint).is_some();
                    let bad_method = methods
                        .iter()
                        .find(|m| !endpoints::METHODS.contains(&m.as_str()));
                    if !known {
                        errors.field(
                            "apiKey.permissions.endpoints",
                            "invalid",
                            format!("The endpoint [{endpoint}] is not a FusionAuth API endpoint."),
                        );
                    } else if let Some(method) = bad_method {
                        errors.field(
                            "apiKey.permissions.endpoints",
                            "invalid",
                            format!("The method [{method}] for endpoint [{endpoint}] is not an HTTP method FusionAuth knows."),
                        );
                    } else if methods.is_empty() {
                        errors.field(
                            "apiKey.permissions.endpoints",
                            "blank",
                            format!("The endpoint [{endpoint}] names no HTTP methods."),
                        );
                    }
                }
                Permissions::Endpoints(map.clone())
            }
        }
    }

    fn check_name(
        &self,
        name: Option<&str>,
        retrievable: bool,
        except: Option<Uuid>,
        errors: &mut Errors,
    ) {
        match name.map(str::trim) {
            None | Some("") if !retrievable => errors.field(
                "apiKey.name",
                "blank",
                "A name is required for a key that is not retrievable.".into(),
            ),
            None | Some("") => {}
            Some(_) => {
                let name = name.unwrap_or_default();
                if name.chars().count() > MAX_LEN {
                    errors.field(
                        "apiKey.name",
                        "tooLong",
                        format!("The name may be at most {MAX_LEN} characters long."),
                    );
                }
                let taken = self
                    .keys
                    .values()
                    .any(|k| Some(k.id) != except && k.name.as_deref() == Some(name));
                if taken {
                    errors.field(
                        "apiKey.name",
                        "duplicate",
                        format!("An API key with name = [{name}] already exists."),
                    );
                }
            }
        }
    }

    /// 400 with these errors, or a 500 while [`Fault::DuplicateAs500`] says so.
    fn reject(&mut self, errors: Errors) -> Outcome {
        if errors.has_duplicate()
            && self
                .fire(|f| (*f == Fault::DuplicateAs500).then_some(()))
                .is_some()
        {
            return Outcome {
                fault: Some(Fault::DuplicateAs500),
                ..Reply::Empty(500).into()
            };
        }
        errors.reply().into()
    }

    fn create(
        &mut self,
        caller: &Caller,
        tenant: Option<Uuid>,
        url_id: Option<Uuid>,
        request: &Request<'_>,
    ) -> Result<Outcome, Reply> {
        let root = parse_body(request)?;
        let object = api_key_object(&root)?;
        let source_id = match present(&root, "sourceKeyId") {
            None => None,
            Some(Value::String(s)) => {
                Some(Uuid::parse_str(s).map_err(|_| conversion_error("sourceKeyId"))?)
            }
            Some(_) => return Err(conversion_error("sourceKeyId")),
        };
        let mut errors = Errors::default();
        let mut input = match &object {
            Some(object) => parse_input(object)?,
            None if source_id.is_some() => Input::default(),
            None => {
                errors.field(
                    "apiKey",
                    "missing",
                    "The request must contain an apiKey object.".into(),
                );
                return Ok(errors.reply().into());
            }
        };
        if let Some(source_id) = source_id {
            match self.visible(source_id, tenant).ok().cloned() {
                None => errors.field(
                    "sourceKeyId",
                    "invalid",
                    format!("The API key with Id [{source_id}] does not exist."),
                ),
                Some(source) if source.key_manager => errors.field(
                    "sourceKeyId",
                    "invalid",
                    "A key manager key cannot be copied.".into(),
                ),
                Some(source) => {
                    if input.permissions.is_none() {
                        input.permissions = Some(match source.permissions {
                            Permissions::Endpoints(map) => PermissionsInput::Endpoints(map),
                            Permissions::EmptyObject => PermissionsInput::EmptyObject,
                            Permissions::Super => PermissionsInput::Absent,
                        });
                    }
                    input.tenant_id = input.tenant_id.or(source.tenant_id);
                    input.ip_acl = input.ip_acl.or(source.ip_access_control_list_id);
                    if !source.retrievable && input.name.is_none() {
                        errors.field(
                            "apiKey.name",
                            "blank",
                            "A name is required to copy a key that is not retrievable.".into(),
                        );
                    }
                }
            }
        }

        // Authority first: a tenant-scoped request mints only for its tenant,
        // and nobody mints more than they hold.
        if let (Some(wanted), Some(own)) = (input.tenant_id, tenant) {
            authorize(wanted == own)?;
        }
        let tenant_id = input.tenant_id.or(tenant);
        let permissions = self.permissions_from(input.permissions.as_ref(), &mut errors);
        authorize(permissions.within(&caller.permissions))?;

        let id = url_id.unwrap_or_else(Uuid::new_v4);
        if self.keys.contains_key(&id) {
            errors.field(
                "apiKey.id",
                "duplicate",
                format!("An API key with Id [{id}] already exists."),
            );
        }
        let key = input.key.filter(|k| !k.is_empty());
        if let Some(key) = &key {
            if key.chars().count() > MAX_LEN {
                errors.field(
                    "apiKey.key",
                    "tooLong",
                    format!("The key may be at most {MAX_LEN} characters long."),
                );
            }
            if self.keys.values().any(|k| &k.key == key) {
                errors.field(
                    "apiKey.key",
                    "duplicate",
                    "An API key with this key value already exists.".into(),
                );
            }
        }
        let retrievable = input.retrievable.unwrap_or(true);
        self.check_name(input.name.as_deref(), retrievable, None, &mut errors);
        if let Some(wanted) = tenant_id.filter(|t| !self.tenants.contains(t)) {
            if self
                .fire(|f| (*f == Fault::UnknownTenantAs500).then_some(()))
                .is_some()
            {
                return Ok(Outcome {
                    fault: Some(Fault::UnknownTenantAs500),
                    ..Reply::Empty(500).into()
                });
            }
            errors.field(
                "apiKey.tenantId",
                "invalid",
                format!("The tenant with Id [{wanted}] does not exist."),
            );
        }
        if !errors.is_empty() {
            return Ok(self.reject(errors));
        }

        let now = self.now();
        let delay = self.fire(|f| match f {
            Fault::PropagationDelay { millis } => Some(*millis),
            _ => None,
        });
        let key = key.unwrap_or_else(|| {
            loop {
                let candidate = generate_key();
                if !self.keys.values().any(|k| k.key == candidate) {
                    break candidate;
                }
            }
        });
        let record = KeyRecord {
            id,
            key,
            key_manager: false,
            retrievable,
            name: input.name.filter(|n| !n.trim().is_empty()),
            permissions,
            attributes: input.attributes.filter(|a| !a.is_empty()),
            tenant_id,
            ip_access_control_list_id: input.ip_acl,
            expiration_instant: input.expiration,
            insert_instant: now,
            last_update_instant: now,
            usable_from: delay.map_or(i64::MIN, |ms| {
                now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
            }),
        };
        let reply = key_reply(&record, true);
        self.keys.insert(id, record);
        let mut outcome = Outcome::from(reply);
        if let Some(millis) = delay {
            outcome.fault = Some(Fault::PropagationDelay { millis });
        }
        if self
            .fire(|f| (*f == Fault::DropAfterCommit).then_some(()))
            .is_some()
        {
            outcome.drop_connection = true;
            outcome.fault = Some(Fault::DropAfterCommit);
        }
        Ok(outcome)
    }

    /// PUT: every mutable field takes the request's value, absent ones are cleared.
    fn update(
        &mut self,
        caller: &Caller,
        tenant: Option<Uuid>,
        id: Uuid,
        root: Map<String, Value>,
    ) -> Result<Outcome, Reply> {
        let target = self.visible(id, tenant)?.clone();
        authorize(target.permissions.within(&caller.permissions))?;
        let object = api_key_object(&root)?;
        let mut errors = Errors::default();
        let Some(object) = object else {
            errors.field(
                "apiKey",
                "missing",
                "The request must contain an apiKey object.".into(),
            );
            return Ok(errors.reply().into());
        };
        let input = parse_input(&object)?;
        let permissions = self.permissions_from(input.permissions.as_ref(), &mut errors);
        authorize(permissions.within(&caller.permissions))?;
        self.check_name(
            input.name.as_deref(),
            target.retrievable,
            Some(id),
            &mut errors,
        );
        if !errors.is_empty() {
            return Ok(self.reject(errors));
        }
        let now = self.now();
        let record = self.keys.get_mut(&id).expect("looked up above");
        record.name = input.name.filter(|n| !n.trim().is_empty());
        record.attributes = input.attributes.filter(|a| !a.is_empty());
        record.permissions = permissions;
        record.ip_access_control_list_id = input.ip_acl;
        record.expiration_instant = input.expiration;
        record.last_update_instant = now.max(record.insert_instant);
        Ok(key_reply(record, record.retrievable).into())
    }

    /// PATCH: the stored key with the request merged in, then a PUT of the result.
    fn patch(
        &mut self,
        caller: &Caller,
        tenant: Option<Uuid>,
        id: Uuid,
        request: &Request<'_>,
    ) -> Result<Outcome, Reply> {
        let content_type = request
            .content_type
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("application/json-patch+json") {
            return Err(general_error(
                "InvalidContentType",
                "The fake FusionAuth does not implement JSON Patch; use GET and PUT.".into(),
            ));
        }
        let merge_patch = content_type.starts_with("application/merge-patch+json");
        let target = self.visible(id, tenant)?;
        let mut current = render(target, false);
        let root = parse_body(request)?;
        let patch = api_key_object(&root)?;
        if let Some(patch) = patch {
            merge(&mut current, &Value::Object(patch), !merge_patch);
        }
        let mut merged = Map::new();
        merged.insert("apiKey".into(), current);
        self.update(caller, tenant, id, merged)
    }
}

/// 401 unless the caller's authority covers the operation.
fn authorize(allowed: bool) -> Result<(), Reply> {
    if allowed {
        Ok(())
    } else {
        Err(Reply::unauthorized())
    }
}

/// Merges `patch` into `target`: objects recursively, `null` removes. With
/// `append_arrays` (FusionAuth's `application/json` PATCH) arrays are
/// concatenated; otherwise (RFC 7396 merge patch) replaced.
fn merge(target: &mut Value, patch: &Value, append_arrays: bool) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (name, value) in patch {
                if value.is_null() {
                    target.remove(name);
                } else if let Some(existing) = target.get_mut(name) {
                    merge(existing, value, append_arrays);
                } else {
                    let mut fresh = Value::Null;
                    merge(&mut fresh, value, append_arrays);
                    target.insert(name.clone(), fresh);
                }
            }
        }
        (Value::Array(target), Value::Array(patch)) if append_arrays => {
            target.extend(patch.iter().cloned());
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// A copy of a JSON body with `apiKey.key` replaced, for the request log.
pub(crate) fn redact(mut value: Value) -> Value {
    if let Some(key) = value.pointer_mut("/apiKey/key")
        && key.is_string()
    {
        *key = json!("[redacted]");
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_56_url_safe_characters() {
        let key = generate_key();
        assert_eq!(key.len(), 56);
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(key, generate_key());
    }

    #[test]
    fn json_patch_appends_and_merge_patch_replaces() {
        let mut target = json!({"a": [1], "b": {"c": 1, "d": 2}});
        merge(&mut target, &json!({"a": [2], "b": {"d": null}}), true);
        assert_eq!(target, json!({"a": [1, 2], "b": {"c": 1}}));
        merge(&mut target, &json!({"a": [3]}), false);
        assert_eq!(target, json!({"a": [3], "b": {"c": 1}}));
    }

    #[test]
    fn redaction_hides_only_the_key_value() {
        let body = redact(json!({"apiKey": {"key": "secret", "name": "n"}}));
        assert_eq!(body, json!({"apiKey": {"key": "[redacted]", "name": "n"}}));
    }

    #[test]
    fn methods_render_in_a_non_alphabetical_order() {
        let permissions = Permissions::Endpoints(BTreeMap::from([(
            "/api/user".to_string(),
            BTreeSet::from(["GET".to_string(), "DELETE".to_string(), "POST".to_string()]),
        )]));
        assert_eq!(
            render_permissions(&permissions),
            Some(json!({"endpoints": {"/api/user": ["DELETE", "POST", "GET"]}}))
        );
    }
}
