//! Test harness shared by keyplan's crates.
//!
//! The Python tools the tests drive (moto's server for SSM, awscli, the
//! official FusionAuth client) live in one pinned virtual environment that
//! `scripts/python-env` creates under `target/venv`. [`moto`] starts one moto
//! server per test binary; tests isolate themselves by environment name.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crate lives in crates/")
        .to_path_buf()
}

/// The test virtual environment: `KEYPLAN_TEST_VENV`, else `target/venv`.
///
/// # Panics
/// When it is missing, with the command that creates it: a test that needs
/// these tools fails rather than skips, so CI never passes without them.
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("KEYPLAN_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/venv"));
    assert!(
        dir.join("bin/python").exists(),
        "the test tools are not installed at {}: run `scripts/python-env` \
         (it installs moto[server], awscli and fusionauth-client, pinned in \
         scripts/requirements-test.txt), or run the whole suite with `scripts/test`",
        dir.display()
    );
    dir
}

/// A program of the test virtual environment, such as `aws` or `python`.
pub fn venv_bin(name: &str) -> PathBuf {
    venv().join("bin").join(name)
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A moto server on loopback, shared by every test of one test binary.
pub struct Moto {
    port: u16,
    // Kept so the watchdog's stdin stays open while the test binary runs;
    // when the binary exits the pipe closes and the watchdog stops moto.
    _watchdog: Mutex<Child>,
}

impl Moto {
    /// `http://127.0.0.1:{port}`, for an endpoint override.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Environment variables that point an AWS client at this server with
    /// dummy credentials.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_SESSION_TOKEN", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_ENDPOINT_URL_SSM", self.url()),
        ]
    }
}

/// The moto server of this test binary, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(start_moto)
}

fn start_moto() -> Moto {
    let moto_server = venv_bin("moto_server");
    let python = venv_bin("python");
    let port = free_port();
    // A tiny watchdog: it runs moto and stops it when our end of its stdin
    // closes, which happens however this test binary ends.
    let watchdog = r#"
import subprocess, sys
p = subprocess.Popen([sys.argv[1], "-H", "127.0.0.1", "-p", sys.argv[2]],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    sys.stdin.read()
finally:
    p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
"#;
    let mut child = Command::new(python)
        .arg("-c")
        .arg(watchdog)
        .arg(&moto_server)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start moto_server through its watchdog");
    wait_for_port(port, Duration::from_secs(60));
    // Keep stdin open: write nothing, hold the handle.
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = stdin.flush();
    }
    Moto {
        port,
        _watchdog: Mutex::new(child),
    }
}

/// Waits until something accepts connections on `port`.
///
/// # Panics
/// After `limit` without an answer.
pub fn wait_for_port(port: u16, limit: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < limit,
            "nothing listened on 127.0.0.1:{port} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A name unique within this machine, for isolating tests (environment names).
pub fn unique_name(stem: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{stem}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moto_answers_http() {
        let moto = moto();
        let mut stream = TcpStream::connect(("127.0.0.1", moto.port())).unwrap();
        stream
            .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1."), "{answer:.80}");
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("t"), unique_name("t"));
    }
}
