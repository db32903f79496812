//! Shared by the integration tests: a fake with a manager key whose every
//! response is checked against FusionAuth's OpenAPI when the test ends, and a
//! tiny HTTP/1.1 client that shows exactly what went over the wire.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use fake_fusionauth::{Exchange, FakeFusionAuth};
use serde_json::Value;

/// The corrected OpenAPI subset that every response must satisfy.
pub fn spec_path() -> PathBuf {
    let path =
        keyplan_test_support::workspace_root().join("../shared/fusionauth/openapi-apikey.yaml");
    assert!(
        path.exists(),
        "{} is missing: the contract tests need the shared FusionAuth data beside the repository \
         (shared/fusionauth/openapi-apikey.yaml)",
        path.display()
    );
    path
}

pub fn python_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Runs a script of tests/python with the pinned venv's python.
pub fn run_python(script: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let python = keyplan_test_support::venv_bin("python");
    let mut child = Command::new(&python)
        .arg(python_script(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin.unwrap_or_default())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("python output")
}

pub fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Checks recorded exchanges against the OpenAPI spec (jsonschema + PyYAML).
pub fn validate_openapi(exchanges: &[Exchange]) {
    let json = serde_json::to_vec(exchanges).expect("exchanges as JSON");
    let spec = spec_path();
    let output = run_python(
        "validate_openapi.py",
        &[spec.to_str().expect("UTF-8 path")],
        Some(&json),
    );
    assert_success("OpenAPI validation of the fake's responses", &output);
}

/// A fake with a global key-manager super key; on drop, every response it
/// gave is validated against the OpenAPI spec.
pub struct Fake {
    fake: FakeFusionAuth,
    pub manager: String,
}

impl Fake {
    pub fn start() -> Fake {
        let fake = FakeFusionAuth::start_in_background();
        let manager = format!("manager-{}", uuid::Uuid::new_v4().simple());
        fake.seed_manager_key(&manager, None);
        Fake { fake, manager }
    }

    /// A request with the manager key.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        self.send(method, path, Some(&self.manager), &[], body)
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Answer {
        self.try_send(method, path, key, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn try_send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(key) = key {
            all.push(("Authorization", key));
        }
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        if body.is_some() {
            all.push(("Content-Type", "application/json"));
        }
        raw_request(self.fake.addr().port(), method, path, &all, body.as_deref())
    }
}

impl Deref for Fake {
    type Target = FakeFusionAuth;
    fn deref(&self) -> &FakeFusionAuth {
        &self.fake
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            validate_openapi(&self.fake.requests());
        }
    }
}

/// An HTTP answer as received.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status and an empty body (FusionAuth's 401 and 404).
    pub fn assert_empty(&self, status: u16) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert!(
            self.body.is_empty(),
            "expected no body, got {:?}",
            String::from_utf8_lossy(&self.body)
        );
    }

    /// Asserts a 200 and returns the `apiKey` object.
    pub fn api_key(&self) -> Value {
        assert_eq!(
            self.status,
            200,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()["apiKey"].clone()
    }

    /// Asserts a 400 and returns the codes of `fieldErrors[field]`.
    pub fn field_codes(&self, field: &str) -> Vec<String> {
        assert_eq!(
            self.status,
            400,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let errors = self.json();
        assert!(
            errors["fieldErrors"].is_object(),
            "fieldErrors is a map: {errors}"
        );
        assert!(
            errors["generalErrors"].is_array(),
            "generalErrors is a list: {errors}"
        );
        errors["fieldErrors"][field]
            .as_array()
            .unwrap_or_else(|| panic!("no fieldErrors[{field}] in {errors}"))
            .iter()
            .map(|e| e["code"].as_str().expect("code").to_string())
            .collect()
    }

    /// Asserts a 400 and returns the codes of `generalErrors`.
    pub fn general_codes(&self) -> Vec<String> {
        assert_eq!(
            self.status,
            400,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()["generalErrors"]
            .as_array()
            .expect("generalErrors")
            .iter()
            .map(|e| e["code"].as_str().expect("code").to_string())
            .collect()
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
/// An error means the server closed the connection without an answer.
pub fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or_default();
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    stream.write_all(body).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if raw.is_empty() => return Err(format!("connection failed: {e}")),
        Err(_) => {}
    }
    if raw.is_empty() {
        return Err("connection closed without an answer".into());
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("incomplete answer head")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// A create request document.
pub fn key_doc(name: &str, endpoints: Value) -> Value {
    serde_json::json!({
        "apiKey": {
            "name": name,
            "permissions": {"endpoints": endpoints},
            "metaData": {"attributes": {"description": "a test key", "keyplan.edge": name}},
        }
    })
}
