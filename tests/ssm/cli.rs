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

fn aws_get(name: &str) -> String {
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

fn python_state(name: &str, key: &str) -> String {
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
        &["apply", "--auto-approve", "--at", "2027-01-31T00:11:00Z"],
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
        &["apply", "--auto-approve", "--at", "2027-02-01T00:12:00Z"],
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
                "2027-02-01T00:13:00Z",
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
