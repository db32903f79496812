//! Shared helpers: a temporary workspace with a keys.toml, the built binary,
//! and a reader of the local store that checks what services would accept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use keyplan_runtime::record::{AcceptsDocument, KeyState, digest};

/// Every key value seen in a store during this test binary's run.
pub static MINTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The root keys.toml: the story's estate on the local default.
pub fn estate() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("keys.toml")).unwrap()
}

/// A temporary directory holding keys.toml, where the binary runs.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    /// Every command's stdout and stderr, for the leak check.
    pub outputs: Vec<(String, String)>,
}

impl Workspace {
    pub fn new(keys_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keys.toml"), keys_toml).unwrap();
        Self {
            dir,
            outputs: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_config(&self, keys_toml: &str) {
        std::fs::write(self.path().join("keys.toml"), keys_toml).unwrap();
    }

    /// The store directory (`dir = ".keyplan"`).
    pub fn store(&self) -> PathBuf {
        self.path().join(".keyplan")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyplan"));
        command
            .args(args)
            .current_dir(self.path())
            .env_remove("KEYPLAN_FAILPOINT")
            .env("NO_COLOR", "1");
        command
    }

    /// Runs keyplan with `args`, records its output and harvests keys.
    pub fn run(&mut self, args: &[&str]) -> Output {
        let output = self.command(args).output().unwrap();
        self.record(&output);
        output
    }

    /// Runs keyplan with `KEYPLAN_FAILPOINT=n`.
    pub fn run_failing_after(&mut self, n: u64, args: &[&str]) -> Output {
        let output = self
            .command(args)
            .env("KEYPLAN_FAILPOINT", n.to_string())
            .output()
            .unwrap();
        self.record(&output);
        output
    }

    pub fn record(&mut self, output: &Output) {
        self.outputs.push((
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
        self.harvest();
    }

    /// Collects every key value in the store's value files.
    pub fn harvest(&self) {
        let mut minted = MINTED.lock().unwrap();
        for (name, value) in self.parameters() {
            if name.contains("/consumers/") {
                minted.insert(value);
            } else if name.contains("/keyplan/staged/")
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&value)
                && let Some(key) = json.get("key").and_then(|k| k.as_str())
            {
                minted.insert(key.to_owned());
            }
        }
    }

    /// Every parameter file of the store (keyplan's own lock and last-apply
    /// record left out): name -> value.
    pub fn parameters(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let root = self.store();
        let mut stack = vec![root.join("keyplan")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if !entry.file_name().to_string_lossy().starts_with('.') {
                    let name = format!("/{}", path.strip_prefix(&root).unwrap().display());
                    if !name.ends_with("/keyplan/lock") && !name.ends_with("/keyplan/last-apply") {
                        out.insert(name, std::fs::read_to_string(&path).unwrap());
                    }
                }
            }
        }
        out
    }

    /// The ids the local authority holds.
    pub fn authority_ids(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.store().join("authority"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_suffix(".json")
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The accepts document of an edge, if any.
    pub fn accepts(&self, service: &str, consumer: &str) -> Option<AcceptsDocument> {
        let path = self
            .store()
            .join(format!("keyplan/dev/services/{service}/accepts/{consumer}"));
        std::fs::read_to_string(path)
            .ok()
            .map(|t| AcceptsDocument::parse(&t).unwrap())
    }

    /// The key a consumer sends to a service, if any.
    pub fn consumer_key(&self, consumer: &str, service: &str) -> Option<String> {
        std::fs::read_to_string(
            self.store()
                .join(format!("keyplan/dev/consumers/{consumer}/keys/{service}")),
        )
        .ok()
    }

    /// Whether the service accepts the consumer's key now.
    pub fn edge_works(&self, service: &str, consumer: &str) -> bool {
        let (Some(doc), Some(key)) = (
            self.accepts(service, consumer),
            self.consumer_key(consumer, service),
        ) else {
            return false;
        };
        let d = digest(key.as_bytes());
        doc.keys
            .iter()
            .any(|k| k.sha256 == d && k.state != KeyState::Pending)
    }

    /// Every (service, consumer) whose accepts document accepts some key.
    pub fn accepted_edges(&self) -> BTreeSet<(String, String)> {
        self.parameters()
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix("/keyplan/dev/services/")?;
                let (service, consumer) = rest.split_once("/accepts/")?;
                let doc = AcceptsDocument::parse(&value).ok()?;
                (!doc.keys.is_empty()).then(|| (service.to_owned(), consumer.to_owned()))
            })
            .collect()
    }

    /// Ids every accepts document and staged record names.
    pub fn recorded_ids(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        for (name, value) in self.parameters() {
            if name.contains("/accepts/")
                && let Ok(doc) = AcceptsDocument::parse(&value)
            {
                ids.extend(doc.ids().map(str::to_owned));
            }
        }
        ids
    }

    /// Checks that no key value seen so far appears in any output, or in any
    /// file of the store other than its value files.
    pub fn assert_no_leaks(&self) {
        let minted = MINTED.lock().unwrap().clone();
        for (stdout, stderr) in &self.outputs {
            for key in &minted {
                assert!(
                    !stdout.contains(key.as_str()),
                    "a key value leaked to stdout:\n{stdout}"
                );
                assert!(
                    !stderr.contains(key.as_str()),
                    "a key value leaked to stderr:\n{stderr}"
                );
            }
        }
        let mut stack = vec![self.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if path != self.store().join("keyplan") {
                        stack.push(path);
                    }
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for key in &minted {
                    assert!(
                        !text.contains(key.as_str()),
                        "a key value leaked into {}",
                        path.display()
                    );
                }
            }
        }
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
#[track_caller]
pub fn assert_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}
