//! The keyplan binary against moto: the story's estate with `store.kind =
//! "ssm"` and the local authority, through every phase of a rotation and a
//! revoke; then awscli and a Python reader use what apply wrote.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use keyplan_runtime::record::{AcceptsDocument, Layout};
use keyplan_test_support::{moto, unique_name, venv_bin};

use crate::support::{Workspace, assert_code, estate, stdout};

pub fn ssm_estate(environment: &str) -> String {
    let store = format!(
        "[store]\nkind = \"ssm\"\nprefix = \"/keyplan\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\nkms_key_id = \"alias/aws/ssm\"\nwrites_per_second = 1000\n",
        moto().url()
    );
    estate()
        .replace("name = \"dev\"", &format!("name = \"{environment}\""))
        .replace(
            "[authority]\nkind = \"local\"          # keyplan mints keys itself; \"fusionauth\" in production",
            "[authority]\nkind = \"local\"\ndir = \".keyplan\"",
        )
        .replace(
            "[store]\nkind = \"local\"          # files under ./.keyplan mirroring SSM; \"ssm\" in production\ndir = \".keyplan\"\nprefix = \"/keyplan\"\n",
            "",
        )
        .replace("[rotation]", &format!("{store}\n[rotation]"))
}

fn run(ws: &mut Workspace, args: &[&str]) -> Output {
    let output = ws.command(args).envs(moto().aws_env()).output().unwrap();
    ws.record(&output);
    output
}

/// A parameter's value, read by awscli with decryption.
pub fn aws_get(name: &str) -> String {
    let output = Command::new(venv_bin("aws"))
        .args(["ssm", "get-parameter", "--with-decryption", "--name", name])
        .args(["--query", "Parameter.Value", "--output", "text"])
        .envs(moto().aws_env())
        .output()
        .expect("run aws");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

/// The state in which a Python reader of the layout finds `key` in the
/// accepts document `name` (it checks by digest).
pub fn python_state(name: &str, key: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ssm/check_accepts.py");
    let mut child = Command::new(venv_bin("python"))
        .arg(script)
        .arg(name)
        .envs(moto().aws_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(key.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_estate_on_ssm_creates_rotates_and_revokes() {
    let environment = unique_name("cli");
    let text = ssm_estate(&environment);
    assert!(text.contains("kind = \"ssm\""), "{text}");
    let mut ws = Workspace::new(&text);
    let layout = Layout::new("/keyplan", &environment);
    let accepts = layout.accepts("product-inventory", "gateway");
    let key_name = layout.consumer_key("gateway", "product-inventory");

    let out = run(
        &mut ws,
        &["apply", "--auto-approve", "--at", "2027-01-01T00:00:00Z"],
    );
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("Apply complete: 3 create"),
        "{}",
        stdout(&out)
    );
    let first = aws_get(&key_name);
    assert_eq!(first.len(), 56);
    assert_eq!(python_state(&accepts, &first), "current");
    crate::support::MINTED.lock().unwrap().insert(first.clone());
    assert_code(
        &run(
            &mut ws,
            &[
                "plan",
                "--detailed-exitcode",
                "--at",
                "2027-01-01T00:01:00Z",
            ],
        ),
        0,
    );

    // Stage: the new key is accepted as pending; the consumer keeps the old one.
    let out = run(
        &mut ws,
        &["apply", "--auto-approve", "--at", "2027-01-31T00:00:00Z"],
    );
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("~ stage product-inventory<-gateway gen 2"),
        "{}",
        stdout(&out)
    );
    assert_eq!(aws_get(&key_name), first);
    let document = AcceptsDocument::parse(&aws_get(&accepts)).unwrap();
    assert_eq!(document.keys.len(), 2);

    // Promote after propagation: the consumer gets the new key, the old one stays accepted.
    let out = run(
        &mut ws,
        &["apply", "--auto-approve", "--at", "2027-01-31T01:00:00Z"],
    );
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("~ promote product-inventory<-gateway gen 2"),
        "{}",
        stdout(&out)
    );
    let second = aws_get(&key_name);
    assert_ne!(second, first);
    crate::support::MINTED
        .lock()
        .unwrap()
        .insert(second.clone());
    assert_eq!(python_state(&accepts, &second), "current");
    assert_eq!(python_state(&accepts, &first), "previous");

    // Retire after grace: only the new key is accepted.
    let out = run(
        &mut ws,
        &["apply", "--auto-approve", "--at", "2027-02-01T02:00:00Z"],
    );
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("~ retire product-inventory<-gateway gen 2"),
        "{}",
        stdout(&out)
    );
    let document = AcceptsDocument::parse(&aws_get(&accepts)).unwrap();
    assert_eq!(document.keys.len(), 1);
    assert_code(
        &run(
            &mut ws,
            &[
                "plan",
                "--detailed-exitcode",
                "--at",
                "2027-02-01T02:01:00Z",
            ],
        ),
        0,
    );

    // Revoke: the edge disappears from the store.
    ws.write_config(&text.replace(
        r#"consumers = ["gateway", "reporting"]"#,
        r#"consumers = ["reporting"]"#,
    ));
    let out = run(
        &mut ws,
        &[
            "apply",
            "--auto-approve",
            "--allow-revoke",
            "--at",
            "2027-02-02T00:00:00Z",
        ],
    );
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("- revoke product-inventory<-gateway"),
        "{}",
        stdout(&out)
    );
    let missing = Command::new(venv_bin("aws"))
        .args(["ssm", "get-parameter", "--name", &accepts])
        .envs(moto().aws_env())
        .output()
        .unwrap();
    assert!(!missing.status.success(), "the accepts document is gone");
    assert_code(
        &run(
            &mut ws,
            &[
                "plan",
                "--detailed-exitcode",
                "--at",
                "2027-02-02T00:01:00Z",
            ],
        ),
        0,
    );
    ws.assert_no_leaks();
}

/// While one `keyplan apply` holds the lock (paused by a failpoint before its
/// first write), a second fails naming the holder, and a third with
/// `--lock-timeout` waits for it and then goes on.
#[cfg(feature = "failpoints")]
#[test]
fn a_second_apply_fails_naming_the_holder_or_waits_with_lock_timeout() {
    let environment = unique_name("lock");
    let mut ws = Workspace::new(&ssm_estate(&environment));
    let lock = Layout::new("/keyplan", &environment).lock();
    let first = ws
        .command(&["apply", "--auto-approve"])
        .envs(moto().aws_env())
        .env("KEYPLAN_FAILPOINT_PAUSE_MS", "6000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let holder_pid = first.id();
    // Wait until the first apply holds the lock.
    let started = std::time::Instant::now();
    loop {
        let probe = Command::new(venv_bin("aws"))
            .args(["ssm", "get-parameter", "--name", &lock])
            .envs(moto().aws_env())
            .output()
            .unwrap();
        if probe.status.success() {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "the first apply never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let second = run(&mut ws, &["apply", "--auto-approve"]);
    assert_code(&second, 1);
    let err = crate::support::stderr(&second);
    assert!(err.contains("the apply lock is held by"), "{err}");
    assert!(err.contains(&format!("pid {holder_pid}")), "{err}");

    let third = run(
        &mut ws,
        &["apply", "--auto-approve", "--lock-timeout", "90s"],
    );
    let first = first.wait_with_output().unwrap();
    ws.record(&first);
    assert_code(&first, 0);
    assert!(
        stdout(&first).contains("Apply complete: 3 create"),
        "{}",
        stdout(&first)
    );
    assert_code(&third, 0);
    let err = crate::support::stderr(&third);
    assert!(err.contains("waiting for the apply lock held by"), "{err}");
    assert!(stdout(&third).contains("No changes"), "{}", stdout(&third));
    ws.assert_no_leaks();
}
