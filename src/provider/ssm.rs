//! AWS SSM Parameter Store as the store, and the apply lock kept in it.
//!
//! Every parameter keyplan writes is a Standard-tier SecureString encrypted
//! with the configured KMS key; tags go through `AddTagsToResource` (SSM
//! refuses tags on an overwrite). Observation reads one recursive
//! `GetParametersByPath` of the environment in pages, without decryption,
//! then the descriptions (fingerprints) with `DescribeParameters` — by-path
//! results carry no description — and decrypts only the names the caller
//! selects with `GetParameters`, ten at a time. See docs/ssm.md.

pub mod lock;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::error::DisplayErrorContext;
use aws_sdk_ssm::types::{
    ParameterStringFilter, ParameterTier, ParameterType, ResourceTypeForTagging, Tag,
};
use jiff::Timestamp;

pub use self::lock::{ParameterApi, RawParameter, SsmLock, SsmLockSettings};
pub use super::pacing::{Pacer, StepDeadline, acquire_with_timeout, check_parameter_count};
use super::{Parameter, ProviderError, Result, Selector, Store};
use crate::secret::Secret;

/// `MaxResults` of `GetParametersByPath` and `GetParameters`: SSM's maximum.
pub const PAGE_SIZE: usize = 10;
/// Standard tier: parameters per account and region.
pub const STANDARD_TIER_MAX_PARAMETERS: usize = 10_000;
/// Writes per second by default: PutParameter's account-wide limit is about 3.
pub const DEFAULT_WRITES_PER_SECOND: f64 = 3.0;

/// How the SSM store writes.
#[derive(Clone, Debug, Default)]
pub struct SsmSettings {
    /// The KMS key of every SecureString; `None` means `aws/ssm` (see
    /// [`SsmStore::warnings`]).
    pub kms_key_id: Option<String>,
    /// Writes per second across this store; `None` turns pacing off (tests).
    pub writes_per_second: Option<f64>,
    /// Tags added to every parameter keyplan creates.
    pub tags: BTreeMap<String, String>,
}

/// Calls made, by kind: what the pagination checks count.
#[derive(Debug, Default)]
pub struct CallCounts {
    pub get_parameters_by_path: AtomicU64,
    pub describe_parameters: AtomicU64,
    pub get_parameters: AtomicU64,
    pub get_parameter: AtomicU64,
    pub put_parameter: AtomicU64,
    pub delete_parameter: AtomicU64,
    pub add_tags: AtomicU64,
}

impl CallCounts {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The config loader behind [`client_from_env`]: the standard AWS
/// credential and region chain (and `AWS_ENDPOINT_URL_SSM`), with keys.toml's
/// region and endpoint on top, and adaptive retries that back off with jitter
/// on `ThrottlingException`. Tests add credentials to it.
pub fn config_loader(region: Option<&str>, endpoint: Option<&str>) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).retry_config(
        RetryConfig::adaptive()
            .with_max_attempts(8)
            .with_max_backoff(Duration::from_secs(20)),
    );
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader
}

/// An SSM client from the environment and keys.toml's `region` / `endpoint`.
pub async fn client_from_env(region: Option<&str>, endpoint: Option<&str>) -> Client {
    Client::new(&config_loader(region, endpoint).load().await)
}

/// What SSM said, with the operation and name; never a value.
fn remote<E>(op: &str, name: &str, error: aws_sdk_ssm::error::SdkError<E>) -> ProviderError
where
    E: std::error::Error + 'static,
{
    ProviderError::Remote(format!("SSM {op} {name}: {}", DisplayErrorContext(&error)))
}

fn timestamp(date: Option<&aws_sdk_ssm::primitives::DateTime>) -> Option<Timestamp> {
    let date = date?;
    Timestamp::new(date.secs(), date.subsec_nanos() as i32).ok()
}

fn version(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The SSM client behind the store and the lock, with the call counters.
#[derive(Clone, Debug)]
pub struct SsmApi {
    client: Client,
    counts: Arc<CallCounts>,
}

impl SsmApi {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            counts: Arc::default(),
        }
    }

    pub fn counts(&self) -> &CallCounts {
        &self.counts
    }

    async fn put(
        &self,
        name: &str,
        value: &str,
        overwrite: bool,
        secure: Option<(&Option<String>, Option<&str>)>,
    ) -> Result<Option<u64>> {
        CallCounts::bump(&self.counts.put_parameter);
        let mut request = self
            .client
            .put_parameter()
            .name(name)
            .value(value)
            .overwrite(overwrite)
            .tier(ParameterTier::Standard);
        request = match secure {
            Some((key, description)) => request
                .r#type(ParameterType::SecureString)
                .set_key_id(key.clone())
                .set_description(description.map(str::to_owned)),
            None => request.r#type(ParameterType::String),
        };
        match request.send().await {
            Ok(out) => Ok(Some(version(out.version()))),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_parameter_already_exists()) =>
            {
                Ok(None)
            }
            Err(e) => {
                // Belt and braces: SSM's messages name fields, not values.
                let message = remote("PutParameter", name, e).to_string();
                Err(ProviderError::Remote(message.replace(value, "[REDACTED]")))
            }
        }
    }

    /// One parameter, decrypted when `decrypt`.
    async fn get_parameter(
        &self,
        name: &str,
        decrypt: bool,
    ) -> Result<Option<aws_sdk_ssm::types::Parameter>> {
        CallCounts::bump(&self.counts.get_parameter);
        match self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(decrypt)
            .send()
            .await
        {
            Ok(mut out) => Ok(out.parameter.take()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                Ok(None)
            }
            Err(e) => Err(remote("GetParameter", name, e)),
        }
    }

    async fn delete_parameter(&self, name: &str) -> Result<()> {
        CallCounts::bump(&self.counts.delete_parameter);
        match self.client.delete_parameter().name(name).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_parameter_not_found()) =>
            {
                Ok(())
            }
            Err(e) => Err(remote("DeleteParameter", name, e)),
        }
    }

    /// Every parameter below `path`, one page after another, following
    /// `NextToken` until SSM stops sending one (a short page is not the end).
    async fn by_path(
        &self,
        path: &str,
        recursive: bool,
    ) -> Result<Vec<aws_sdk_ssm::types::Parameter>> {
        let mut parameters = Vec::new();
        let mut token: Option<String> = None;
        loop {
            CallCounts::bump(&self.counts.get_parameters_by_path);
            let out = self
                .client
                .get_parameters_by_path()
                .path(path)
                .recursive(recursive)
                .with_decryption(false)
                .max_results(PAGE_SIZE as i32)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| remote("GetParametersByPath", path, e))?;
            parameters.extend(out.parameters.unwrap_or_default());
            match out.next_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(parameters),
            }
        }
    }

    /// Descriptions below `path` (recursive), or of one name.
    async fn descriptions(
        &self,
        filter: ParameterStringFilter,
        what: &str,
    ) -> Result<HashMap<String, String>> {
        let mut descriptions = HashMap::new();
        let mut token: Option<String> = None;
        loop {
            CallCounts::bump(&self.counts.describe_parameters);
            let out = self
                .client
                .describe_parameters()
                .parameter_filters(filter.clone())
                .max_results(50)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| remote("DescribeParameters", what, e))?;
            for meta in out.parameters.unwrap_or_default() {
                if let (Some(name), Some(description)) = (meta.name, meta.description) {
                    descriptions.insert(name, description);
                }
            }
            match out.next_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(descriptions),
            }
        }
    }

    /// Decrypted values and versions of `names`, ten per `GetParameters`.
    async fn values(&self, names: &[String]) -> Result<HashMap<String, (Secret, u64)>> {
        let mut values = HashMap::new();
        for chunk in names.chunks(PAGE_SIZE) {
            CallCounts::bump(&self.counts.get_parameters);
            let out = self
                .client
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| remote("GetParameters", &chunk.join(","), e))?;
            for p in out.parameters.unwrap_or_default() {
                let v = version(p.version);
                if let (Some(name), Some(value)) = (p.name, p.value) {
                    values.insert(name, (Secret::new(value), v));
                }
            }
        }
        Ok(values)
    }
}

fn filter(key: &str, option: Option<&str>, value: &str) -> ParameterStringFilter {
    ParameterStringFilter::builder()
        .key(key)
        .set_option(option.map(str::to_owned))
        .values(value)
        .build()
        .expect("the filter has a key")
}

#[async_trait]
impl ParameterApi for SsmApi {
    async fn get(&self, name: &str) -> Result<Option<RawParameter>> {
        Ok(self
            .get_parameter(name, false)
            .await?
            .map(|p| RawParameter {
                version: version(p.version),
                modified: timestamp(p.last_modified_date.as_ref()),
                value: p.value.unwrap_or_default(),
                name: p.name.unwrap_or_else(|| name.to_owned()),
            }))
    }

    async fn create(&self, name: &str, value: &str) -> Result<Option<u64>> {
        self.put(name, value, false, None).await
    }

    async fn overwrite(&self, name: &str, value: &str) -> Result<u64> {
        Ok(self
            .put(name, value, true, None)
            .await?
            .expect("an overwrite never reports an existing name"))
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.delete_parameter(name).await
    }

    async fn list(&self, path: &str) -> Result<Vec<RawParameter>> {
        Ok(self
            .by_path(path, false)
            .await?
            .into_iter()
            .filter_map(|p| {
                Some(RawParameter {
                    version: version(p.version),
                    modified: timestamp(p.last_modified_date.as_ref()),
                    value: p.value.unwrap_or_default(),
                    name: p.name?,
                })
            })
            .collect())
    }
}

/// The store in SSM Parameter Store.
#[derive(Debug)]
pub struct SsmStore {
    api: SsmApi,
    settings: SsmSettings,
    pacer: Pacer,
}

impl SsmStore {
    pub fn new(client: Client, settings: SsmSettings) -> Self {
        let pacer = settings
            .writes_per_second
            .map_or_else(Pacer::off, Pacer::per_second);
        Self {
            api: SsmApi::new(client),
            settings,
            pacer,
        }
    }

    /// The lock at `name` (`Layout::lock()`), through the same client (its
    /// writes are not paced: they are few, and must not queue behind apply's).
    pub fn lock(&self, name: &str, settings: SsmLockSettings) -> SsmLock {
        SsmLock::new(Arc::new(self.api.clone()), name, settings)
    }

    /// Calls made so far, by kind.
    pub fn counts(&self) -> &CallCounts {
        self.api.counts()
    }

    /// What the operator should know about this configuration.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.settings.kms_key_id.is_none() {
            warnings.push(
                "store.kms_key_id is not set: SecureStrings are encrypted with aws/ssm, \
                 which every principal in the account may decrypt; set a customer managed key"
                    .to_owned(),
            );
        }
        warnings
    }

    async fn description(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .api
            .descriptions(filter("Name", Some("Equals"), name), name)
            .await?
            .remove(name))
    }

    async fn tag(&self, name: &str) -> Result<()> {
        if self.settings.tags.is_empty() {
            return Ok(());
        }
        let tags = self
            .settings
            .tags
            .iter()
            .map(|(k, v)| {
                Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .expect("tags have both fields")
            })
            .collect();
        self.pacer.wait().await;
        CallCounts::bump(&self.api.counts.add_tags);
        self.api
            .client
            .add_tags_to_resource()
            .resource_type(ResourceTypeForTagging::Parameter)
            .resource_id(name)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| remote("AddTagsToResource", name, e))?;
        Ok(())
    }
}

#[async_trait]
impl Store for SsmStore {
    async fn list(&self, path: &str, decrypt: &Selector<'_>) -> Result<Vec<Parameter>> {
        let listed = self.api.by_path(path, true).await?;
        let mut descriptions = if listed.is_empty() {
            HashMap::new()
        } else {
            self.api
                .descriptions(filter("Path", Some("Recursive"), path), path)
                .await?
        };
        let selected: Vec<String> = listed
            .iter()
            .filter_map(|p| p.name.clone())
            .filter(|n| decrypt(n))
            .collect();
        let mut values = self.api.values(&selected).await?;
        let mut parameters = Vec::with_capacity(listed.len());
        for p in listed {
            let Some(name) = p.name else { continue };
            let mut v = version(p.version);
            let value = if decrypt(&name) {
                let Some((value, read_version)) = values.remove(&name) else {
                    continue; // deleted while we listed
                };
                v = read_version;
                Some(value)
            } else {
                None
            };
            parameters.push(Parameter {
                description: descriptions.remove(&name),
                name,
                version: v,
                value,
            });
        }
        parameters.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(parameters)
    }

    async fn get(&self, name: &str) -> Result<Option<Parameter>> {
        let Some(p) = self.api.get_parameter(name, true).await? else {
            return Ok(None);
        };
        Ok(Some(Parameter {
            name: name.to_owned(),
            version: version(p.version),
            value: p.value.map(Secret::new),
            description: self.description(name).await?,
        }))
    }

    /// Reads the parameter first (reads are ~13 times cheaper in SSM's
    /// quotas than writes) and writes only when the value or description
    /// differs. A changed description alone rewrites the same value: SSM's
    /// overwrite needs one.
    async fn put(&self, name: &str, value: &Secret, description: Option<&str>) -> Result<u64> {
        if let Some(current) = self.api.get_parameter(name, true).await?
            && current.value.as_deref() == Some(value.expose())
            && self.description(name).await?.as_deref() == description
        {
            return Ok(version(current.version));
        }
        self.pacer.wait().await;
        let written = self
            .api
            .put(
                name,
                value.expose(),
                true,
                Some((&self.settings.kms_key_id, description)),
            )
            .await?
            .expect("an overwrite never reports an existing name");
        if written == 1 {
            self.tag(name).await?;
        }
        Ok(written)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.pacer.wait().await;
        self.api.delete_parameter(name).await
    }

    fn describe(&self) -> String {
        "SSM Parameter Store".to_owned()
    }
}
