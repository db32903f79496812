//! The embedded default: a store, an authority and a lock in one directory,
//! so keyplan runs on a laptop with nothing else installed.
//!
//! Layout (see docs/store-layout.md): parameter `{name}` is the file
//! `{dir}{name}` holding the value and nothing else; versions and descriptions
//! live in `{dir}/index.json`; the authority's records (never key values) live
//! in `{dir}/authority/{id}.json`. Files are 0600, directories 0700, and every
//! write is a temp file renamed into place, so a reader never sees half a file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{
    Authority, AuthorityKey, Lock, LockError, LockRecord, MintRequest, Parameter, ProviderError,
    Result, Selector, Store,
};
use crate::secret::Secret;

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProviderError {
    let what = what.into();
    move |source| ProviderError::Io { what, source }
}

/// Creates `dir` and its parents with mode 0700.
fn create_dirs(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(format!("creating {}", dir.display())))
}

/// Replaces `path` with `bytes` atomically: a 0600 temp file beside it, renamed.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().expect("store paths have a parent");
    create_dirs(parent)?;
    let file_name = path.file_name().expect("store paths name a file");
    let temp = parent.join(format!(
        ".{}.tmp.{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let what = || format!("writing {}", path.display());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io_error(what()))?;
    file.write_all(bytes).map_err(io_error(what()))?;
    file.sync_all().map_err(io_error(what()))?;
    fs::rename(&temp, path).map_err(io_error(what()))
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProviderError::Io {
            what: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

fn remove_optional(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ProviderError::Io {
            what: format!("deleting {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The directory of the local store, authority and lock, with the path
/// people see in messages (as written in keys.toml).
#[derive(Clone, Debug)]
pub struct LocalDir {
    dir: PathBuf,
    shown: String,
}

impl LocalDir {
    pub fn new(dir: PathBuf, shown: impl Into<String>) -> Self {
        Self {
            dir,
            shown: shown.into(),
        }
    }

    /// The file of parameter `name` (`{dir}{name}`).
    fn parameter_path(&self, name: &str) -> PathBuf {
        self.dir.join(name.trim_start_matches('/'))
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    fn authority_path(&self, id: &str) -> PathBuf {
        self.dir.join("authority").join(format!("{id}.json"))
    }
}

/// What the local index keeps about a parameter besides its value.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct IndexEntry {
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    modified: Option<Timestamp>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    parameters: BTreeMap<String, IndexEntry>,
}

/// The local store: a directory tree mirroring the SSM layout.
#[derive(Clone, Debug)]
pub struct LocalStore {
    dir: LocalDir,
}

impl LocalStore {
    pub fn new(dir: LocalDir) -> Self {
        Self { dir }
    }

    fn load_index(&self) -> Result<Index> {
        let path = self.dir.index_path();
        match read_optional(&path)? {
            None => Ok(Index::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| ProviderError::Corrupt {
                what: path.display().to_string(),
                why: e.to_string(),
            }),
        }
    }

    fn save_index(&self, index: &Index) -> Result<()> {
        let text = serde_json::to_string_pretty(index).expect("the index serializes");
        write_atomic(&self.dir.index_path(), text.as_bytes())
    }

    fn walk(&self, dir: &Path, names: &mut Vec<String>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(format!("listing {}", dir.display()))(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error(format!("listing {}", dir.display())))?;
            let file_name = entry.file_name();
            if file_name.to_string_lossy().starts_with('.') {
                continue; // temp files of writes in progress
            }
            let path = entry.path();
            if path.is_dir() {
                self.walk(&path, names)?;
            } else if let Ok(relative) = path.strip_prefix(&self.dir.dir) {
                names.push(format!("/{}", relative.to_string_lossy()));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn list(&self, path: &str, decrypt: &Selector<'_>) -> Result<Vec<Parameter>> {
        let index = self.load_index()?;
        let mut names = Vec::new();
        self.walk(&self.dir.parameter_path(path), &mut names)?;
        names.sort();
        let mut parameters = Vec::with_capacity(names.len());
        for name in names {
            let entry = index.parameters.get(&name).cloned().unwrap_or_default();
            let value = if decrypt(&name) {
                match read_optional(&self.dir.parameter_path(&name))? {
                    Some(text) => Some(Secret::new(text)),
                    None => continue, // deleted while we listed
                }
            } else {
                None
            };
            parameters.push(Parameter {
                name,
                version: entry.version,
                value,
                description: entry.description,
            });
        }
        Ok(parameters)
    }

    async fn get(&self, name: &str) -> Result<Option<Parameter>> {
        let Some(text) = read_optional(&self.dir.parameter_path(name))? else {
            return Ok(None);
        };
        let entry = self
            .load_index()?
            .parameters
            .remove(name)
            .unwrap_or_default();
        Ok(Some(Parameter {
            name: name.to_owned(),
            version: entry.version,
            value: Some(Secret::new(text)),
            description: entry.description,
        }))
    }

    async fn put(&self, name: &str, value: &Secret, description: Option<&str>) -> Result<u64> {
        write_atomic(&self.dir.parameter_path(name), value.expose().as_bytes())?;
        let mut index = self.load_index()?;
        let entry = index.parameters.entry(name.to_owned()).or_default();
        entry.version += 1;
        entry.description = description.map(str::to_owned);
        entry.modified = Some(Timestamp::now());
        let version = entry.version;
        self.save_index(&index)?;
        Ok(version)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        remove_optional(&self.dir.parameter_path(name))?;
        let mut index = self.load_index()?;
        if index.parameters.remove(name).is_some() {
            self.save_index(&index)?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("local store at {}", self.dir.shown)
    }
}

/// The local authority: keyplan mints keys itself and records them under
/// `{dir}/authority/`. Like a FusionAuth key created with
/// `retrievable = false`, a key's value is handed over once, at mint, and the
/// record keeps only metadata: the value lives in the store alone.
#[derive(Clone, Debug)]
pub struct LocalAuthority {
    dir: LocalDir,
}

impl LocalAuthority {
    pub fn new(dir: LocalDir) -> Self {
        Self { dir }
    }

    fn load(&self, id: &str) -> Result<Option<AuthorityKey>> {
        let path = self.dir.authority_path(id);
        read_optional(&path)?
            .map(|text| {
                serde_json::from_str(&text).map_err(|e| ProviderError::Corrupt {
                    what: path.display().to_string(),
                    why: e.to_string(),
                })
            })
            .transpose()
    }

    fn save(&self, key: &AuthorityKey) -> Result<()> {
        let text = serde_json::to_string_pretty(key).expect("authority records serialize");
        write_atomic(&self.dir.authority_path(&key.id), text.as_bytes())
    }
}

/// Ids are UUIDs chosen by keyplan; anything else would escape the directory.
fn check_id(id: &str) -> Result<()> {
    uuid::Uuid::parse_str(id)
        .map(drop)
        .map_err(|_| ProviderError::Remote(format!("authority key id {id:?} is not a UUID")))
}

#[async_trait]
impl Authority for LocalAuthority {
    async fn get(&self, id: &str) -> Result<Option<AuthorityKey>> {
        check_id(id)?;
        self.load(id)
    }

    async fn mint(&self, request: &MintRequest) -> Result<Secret> {
        check_id(&request.id)?;
        if self.load(&request.id)?.is_some() {
            return Err(ProviderError::AlreadyExists {
                what: format!("authority key {}", request.id),
            });
        }
        self.save(&AuthorityKey::minted(request, Timestamp::now()))?;
        Ok(Secret::generate())
    }

    async fn set_expiry(&self, id: &str, expires: Option<Timestamp>) -> Result<()> {
        check_id(id)?;
        let mut key = self
            .load(id)?
            .ok_or_else(|| ProviderError::Remote(format!("authority key {id} does not exist")))?;
        key.expires = expires;
        key.updated = Timestamp::now();
        self.save(&key)
    }

    async fn delete(&self, id: &str) -> Result<()> {
        check_id(id)?;
        remove_optional(&self.dir.authority_path(id))
    }

    fn describe(&self) -> String {
        format!("local authority at {}/authority", self.dir.shown)
    }
}

/// The apply lock as a file holding a [`LockRecord`].
///
/// Taking a free lock is an exclusive create. Taking over an expired one is
/// a rename of the expired file to a name of our own (only one rename of a
/// file can succeed), a check that what we moved is the expired record we
/// saw, and then an exclusive create of ours.
#[derive(Clone, Debug)]
pub struct LocalLock {
    path: PathBuf,
}

impl LocalLock {
    /// The lock of the environment whose lock parameter is `name`.
    pub fn new(dir: &LocalDir, name: &str) -> Self {
        Self {
            path: dir.parameter_path(name),
        }
    }

    fn read(&self) -> Result<Option<LockRecord>, LockError> {
        Ok(read_optional(&self.path)?
            .map(|text| {
                serde_json::from_str(&text).map_err(|e| ProviderError::Corrupt {
                    what: self.path.display().to_string(),
                    why: e.to_string(),
                })
            })
            .transpose()?)
    }

    /// Writes a new lock file only if none exists.
    fn create_exclusive(&self, record: &LockRecord) -> Result<bool, LockError> {
        create_dirs(self.path.parent().expect("lock has a parent"))?;
        let text = serde_json::to_string_pretty(record).expect("lock records serialize");
        // Write the whole record beside it, then hard-link it into place:
        // link fails if the lock exists, and readers never see a partial file.
        let temp = self.path.with_file_name(format!(".lock.new.{}", record.id));
        write_atomic(&temp, text.as_bytes())?;
        let linked = fs::hard_link(&temp, &self.path);
        remove_optional(&temp)?;
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_error(format!("creating {}", self.path.display()))(e).into()),
        }
    }
}

#[async_trait]
impl Lock for LocalLock {
    async fn acquire(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError> {
        loop {
            if self.create_exclusive(record)? {
                return Ok(());
            }
            let Some(held) = self.read()? else {
                continue; // released between our create and our read
            };
            if held.expires > now {
                return Err(LockError::Held(held));
            }
            // Expired: move it aside under a name only we use.
            let aside = self
                .path
                .with_file_name(format!(".lock.expired.{}", record.id));
            match fs::rename(&self.path, &aside) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("taking over the expired lock")(e).into()),
            }
            let moved: Option<LockRecord> =
                read_optional(&aside)?.and_then(|text| serde_json::from_str(&text).ok());
            if moved.as_ref().map(|m| &m.id) != Some(&held.id) {
                // We moved somebody's fresh lock: put it back if the place is
                // still free, and start over.
                let _ = fs::hard_link(&aside, &self.path);
            }
            remove_optional(&aside)?;
        }
    }

    async fn renew(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError> {
        self.verify(record, now).await?;
        let text = serde_json::to_string_pretty(record).expect("lock records serialize");
        write_atomic(&self.path, text.as_bytes())?;
        Ok(())
    }

    async fn verify(&self, record: &LockRecord, now: Timestamp) -> Result<(), LockError> {
        match self.read()? {
            Some(held) if held.id == record.id && held.expires > now => Ok(()),
            _ => Err(LockError::Lost(record.id.clone())),
        }
    }

    async fn release(&self, record: &LockRecord) -> Result<(), LockError> {
        if let Some(held) = self.read()?
            && held.id == record.id
        {
            remove_optional(&self.path)?;
        }
        Ok(())
    }

    async fn current(&self) -> Result<Option<LockRecord>, LockError> {
        self.read()
    }

    async fn force_unlock(&self, id: &str) -> Result<LockRecord, LockError> {
        match self.read()? {
            Some(held) if held.id == id => {
                remove_optional(&self.path)?;
                Ok(held)
            }
            _ => Err(LockError::NotHeld(id.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, LocalDir) {
        let temp = tempfile::tempdir().unwrap();
        let dir = LocalDir::new(temp.path().join(".keyplan"), ".keyplan");
        (temp, dir)
    }

    fn lock_record(id: &str, expires: &str) -> LockRecord {
        LockRecord {
            id: id.into(),
            holder: "test".into(),
            operation: "apply".into(),
            started: "2027-01-01T00:00:00Z".parse().unwrap(),
            expires: expires.parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn store_writes_value_only_files_with_private_modes() {
        use std::os::unix::fs::PermissionsExt as _;
        let (_t, dir) = dir();
        let store = LocalStore::new(dir.clone());
        let v1 = store
            .put(
                "/kp/dev/consumers/a/keys/b",
                &Secret::new("k".into()),
                Some("fp"),
            )
            .await
            .unwrap();
        let v2 = store
            .put(
                "/kp/dev/consumers/a/keys/b",
                &Secret::new("k2".into()),
                Some("fp2"),
            )
            .await
            .unwrap();
        assert_eq!((v1, v2), (1, 2));
        let file = dir.parameter_path("/kp/dev/consumers/a/keys/b");
        assert_eq!(fs::read_to_string(&file).unwrap(), "k2");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let parent = file.parent().unwrap();
        assert_eq!(
            fs::metadata(parent).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let listed = store.list("/kp/dev", &|_| false).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].version, 2);
        assert_eq!(listed[0].description.as_deref(), Some("fp2"));
        assert!(listed[0].value.is_none(), "not asked to decrypt");

        store.delete("/kp/dev/consumers/a/keys/b").await.unwrap();
        store.delete("/kp/dev/consumers/a/keys/b").await.unwrap();
        assert!(store.list("/kp/dev", &|_| true).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn authority_keeps_no_key_values() {
        let (_t, dir) = dir();
        let authority = LocalAuthority::new(dir.clone());
        let id = uuid::Uuid::new_v4().to_string();
        let request = MintRequest {
            id: id.clone(),
            name: "n".into(),
            attributes: BTreeMap::new(),
        };
        let key = authority.mint(&request).await.unwrap();
        let record = fs::read_to_string(dir.authority_path(&id)).unwrap();
        assert!(!record.contains(key.expose()));
        assert!(matches!(
            authority.mint(&request).await,
            Err(ProviderError::AlreadyExists { .. })
        ));
        authority.delete(&id).await.unwrap();
        assert!(authority.get(&id).await.unwrap().is_none());
        assert!(authority.get("../../etc/passwd").await.is_err());
    }

    #[tokio::test]
    async fn lock_is_exclusive_and_expired_locks_are_taken_over() {
        let (_t, dir) = dir();
        let lock = LocalLock::new(&dir, "/kp/dev/keyplan/lock");
        let now: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let first = lock_record("a", "2027-01-01T00:10:00Z");
        lock.acquire(&first, now).await.unwrap();
        let second = lock_record("b", "2027-01-01T00:20:00Z");
        match lock.acquire(&second, now).await {
            Err(LockError::Held(held)) => assert_eq!(held.id, "a"),
            other => panic!("expected Held, got {other:?}"),
        }
        let later: Timestamp = "2027-01-01T00:11:00Z".parse().unwrap();
        lock.acquire(&second, later).await.unwrap();
        assert!(matches!(
            lock.verify(&first, later).await,
            Err(LockError::Lost(_))
        ));
        assert!(matches!(
            lock.force_unlock("a").await,
            Err(LockError::NotHeld(_))
        ));
        assert_eq!(lock.force_unlock("b").await.unwrap().id, "b");
        assert!(lock.current().await.unwrap().is_none());
    }
}
