//! Plans for pipelines: saved plans applied exactly as reviewed, the human,
//! JSON and markdown renderings (snapshots), and the JSON Schema of keys.toml.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use keyplan_runtime::record::{AcceptsDocument, digest_prefix};

use crate::support::{Workspace, assert_code, estate, stderr, stdout};

/// Stable names for the random key digests a test meets: `<edge genN>`,
/// collected from the store as the test goes (keys retired later keep theirs).
#[derive(Default)]
struct Labels(BTreeMap<String, String>);

impl Labels {
    fn harvest(&mut self, ws: &Workspace) {
        for (name, value) in ws.parameters() {
            let Some(rest) = name.strip_prefix("/keyplan/dev/services/") else {
                continue;
            };
            let Some((service, consumer)) = rest.split_once("/accepts/") else {
                continue;
            };
            let Ok(doc) = AcceptsDocument::parse(&value) else {
                continue;
            };
            for key in doc.keys {
                self.0
                    .entry(key.sha256)
                    .or_insert_with(|| format!("{service}<-{consumer} gen{}", key.generation));
            }
        }
    }

    /// Runs keyplan, naming the digests seen before and after.
    fn run(&mut self, ws: &mut Workspace, args: &[&str]) -> std::process::Output {
        self.harvest(ws);
        let out = ws.run(args);
        self.harvest(ws);
        out
    }

    #[track_caller]
    fn snapshot(&self, name: &str, text: &str) {
        let mut settings = insta::Settings::clone_current();
        for (digest, label) in &self.0 {
            settings.add_filter(&regex_escape(digest), format!("<{label}>"));
            settings.add_filter(&regex_escape(digest_prefix(digest)), format!("<{label}>"));
        }
        settings.add_filter(
            r#""sha256": "[A-Za-z0-9_-]{43}""#,
            r#""sha256": "<keys.toml>""#,
        );
        // Instants stamped by an apply carry the seconds it took to get there.
        settings.add_filter(r"T(\d\d:\d\d):\d\dZ", "T$1:ssZ");
        // Key ids include the lock id of the last apply (random).
        settings.add_filter(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "<uuid>",
        );
        settings.set_prepend_module_to_snapshot(false);
        settings.bind(|| insta::assert_snapshot!(name, text));
    }
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn plans_in_every_phase_render_as_human_json_and_markdown() {
    let mut ws = Workspace::new(&estate());
    let mut labels = Labels::default();
    assert_code(
        &labels.run(
            &mut ws,
            &["apply", "--auto-approve", "--at", "2027-01-01T00:00:00Z"],
        ),
        0,
    );

    // Stage due: human, JSON, markdown.
    for (format, name) in [
        ("human", "stage_human"),
        ("json", "stage_json"),
        ("markdown", "stage_markdown"),
    ] {
        let out = labels.run(
            &mut ws,
            &["plan", "--at", "2027-02-01T00:00:00Z", "--format", format],
        );
        assert_code(&out, 0);
        labels.snapshot(name, &stdout(&out));
    }
    assert_code(
        &labels.run(
            &mut ws,
            &["apply", "--auto-approve", "--at", "2027-02-01T00:00:00Z"],
        ),
        0,
    );
    // Promote due.
    let out = labels.run(&mut ws, &["plan", "--at", "2027-02-01T00:11:30Z"]);
    labels.snapshot("promote_human", &stdout(&out));
    assert_code(
        &labels.run(
            &mut ws,
            &["apply", "--auto-approve", "--at", "2027-02-01T00:11:30Z"],
        ),
        0,
    );
    // Retire due.
    let out = labels.run(&mut ws, &["plan", "--at", "2027-02-02T00:13:00Z"]);
    labels.snapshot("retire_human", &stdout(&out));
    assert_code(
        &labels.run(
            &mut ws,
            &["apply", "--auto-approve", "--at", "2027-02-02T00:13:00Z"],
        ),
        0,
    );
    // A revoke, loud in markdown; `show` renders the saved plan the same way.
    ws.write_config(&estate().replace(
        r#"consumers = ["gateway", "reporting"]"#,
        r#"consumers = ["gateway"]"#,
    ));
    let out = labels.run(
        &mut ws,
        &[
            "plan",
            "--at",
            "2027-02-03T00:00:00Z",
            "--format",
            "markdown",
            "--out",
            "revoke.json",
        ],
    );
    labels.snapshot("revoke_markdown", &stdout(&out));
    let out = labels.run(&mut ws, &["show", "revoke.json"]);
    labels.snapshot("revoke_show_human", &stdout(&out));
    ws.assert_no_leaks();
}

#[test]
fn expedited_and_immediate_rotations_say_what_callers_see() {
    let mut ws = Workspace::new(&estate());
    let mut labels = Labels::default();
    assert_code(
        &labels.run(
            &mut ws,
            &["apply", "--auto-approve", "--at", "2027-01-01T00:00:00Z"],
        ),
        0,
    );
    let out = labels.run(
        &mut ws,
        &[
            "rotate",
            "product-catalog<-gateway",
            "--immediately",
            "--auto-approve",
            "--at",
            "2027-01-01T01:00:00Z",
        ],
    );
    assert_code(&out, 0);
    labels.snapshot("immediately_human", &stdout(&out));
    let out = labels.run(
        &mut ws,
        &[
            "rotate",
            "product-inventory<-gateway",
            "--expedite",
            "--auto-approve",
            "--at",
            "2027-01-01T02:00:00Z",
        ],
    );
    assert_code(&out, 0);
    let out = labels.run(&mut ws, &["plan", "--at", "2027-01-01T02:11:30Z"]);
    labels.snapshot("expedite_promote_human", &stdout(&out));
    assert_code(
        &labels.run(
            &mut ws,
            &["apply", "--auto-approve", "--at", "2027-01-01T02:11:30Z"],
        ),
        0,
    );
    let doc = ws.accepts("product-inventory", "gateway").unwrap();
    let previous = doc.keys.iter().find(|k| k.until.is_some()).unwrap();
    let until = previous.until.unwrap();
    // The expedited grace is the smallest the rules allow (288 s for 60 s
    // readers), not 1d: until = promote time (02:11:30, plus however long the
    // apply took) + 4m48s.
    let promoted: jiff::Timestamp = "2027-01-01T02:11:30Z".parse().unwrap();
    let grace = until.duration_since(promoted).as_secs();
    assert!((288..288 + 60).contains(&grace), "until {until}");
    ws.assert_no_leaks();
}

#[test]
fn a_saved_plan_round_trips_and_is_applied_exactly() {
    let mut ws = Workspace::new(&estate());
    let out = ws.run(&["plan", "--out", "plan.json"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("Saved the plan to plan.json"),
        "{}",
        stderr(&out)
    );
    let saved = std::fs::read_to_string(ws.path().join("plan.json")).unwrap();
    assert!(saved.contains("\"format\": \"keyplan-plan\""));
    let out = ws.run(&["show", "plan.json"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("Plan: 3 to create."),
        "{}",
        stdout(&out)
    );
    let out = ws.run(&["show", "plan.json", "--format", "json"]);
    assert_eq!(
        stdout(&out),
        saved,
        "show --format json prints the document as saved"
    );

    // Passing the file is the approval: no --auto-approve needed, even off a terminal.
    let out = ws.run(&["apply", "plan.json"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("Apply complete: 3 create"),
        "{}",
        stdout(&out)
    );
    let ids: Vec<String> =
        serde_json::from_str::<serde_json::Value>(&saved).unwrap()["plan"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["steps"][1]["id"].as_str().unwrap().to_owned())
            .collect();
    assert_eq!(
        ws.authority_ids(),
        ids.into_iter().collect(),
        "exactly the planned keys were minted"
    );
    assert_code(&ws.run(&["plan", "--detailed-exitcode"]), 0);
    // The same plan cannot be applied twice: what it touches has moved.
    let out = ws.run(&["apply", "plan.json"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("services/product-catalog/accepts/gateway: absent -> version 1"),
        "{}",
        stderr(&out)
    );
    ws.assert_no_leaks();
}

#[test]
fn a_saved_plan_is_refused_when_the_store_or_keys_toml_changed_or_it_is_early() {
    let mut ws = Workspace::new(&estate());
    // The store changes behind the plan's back: another apply, from a
    // keys.toml that declares only the catalog, creates its edge.
    assert_code(&ws.run(&["plan", "--out", "create.json"]), 0);
    let catalog_only =
        estate().replace(r#"consumers = ["gateway", "reporting"]"#, "consumers = []");
    ws.write_config(&catalog_only);
    assert_code(&ws.run(&["apply", "--auto-approve"]), 0);
    ws.write_config(&estate());
    let before = ws.parameters();
    let out = ws.run(&["apply", "create.json"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("services/product-catalog/accepts/gateway: absent -> version 1"),
        "{err}"
    );
    assert!(
        err.contains("+ services/product-catalog/accepts/gateway: version 1"),
        "{err}"
    );
    assert!(
        err.contains("- services/product-catalog/accepts/gateway: absent"),
        "{err}"
    );
    assert_eq!(before, ws.parameters(), "a refused plan changes nothing");

    // keys.toml changes.
    assert_code(&ws.run(&["plan", "--out", "again.json"]), 0);
    ws.write_config(&estate().replace("every = \"90d\"", "every = \"60d\""));
    let out = ws.run(&["apply", "again.json"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("keys.toml changed since the plan was made"),
        "{}",
        stderr(&out)
    );
    assert_eq!(before, ws.parameters(), "a refused plan changes nothing");

    // A plan made for the future waits for its time gates.
    ws.write_config(&estate());
    assert_code(
        &ws.run(&["plan", "--at", "2099-01-01", "--out", "future.json"]),
        0,
    );
    let out = ws.run(&["apply", "future.json"]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("the plan was made for 2099-01-01T00:00Z, which has not come yet"),
        "{err}"
    );
    assert!(err.contains("not due until 2099-01-01T00:00Z"), "{err}");
    assert_eq!(before, ws.parameters(), "a refused plan changes nothing");

    let out = ws.run(&["apply", "future.json", "--at", "2099-01-01"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("--at does not go with a saved plan"),
        "{}",
        stderr(&out)
    );
    let out = ws.run(&["show", "keys.toml"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("not JSON"), "{}", stderr(&out));
    ws.assert_no_leaks();
}

#[test]
fn init_writes_a_valid_starter_and_never_overwrites() {
    let mut ws = Workspace::new("");
    std::fs::remove_file(ws.path().join("keys.toml")).unwrap();
    assert_code(&ws.run(&["init", "--environment", "staging"]), 0);
    let text = std::fs::read_to_string(ws.path().join("keys.toml")).unwrap();
    assert!(text.contains("name = \"staging\""));
    let id = text.lines().find(|l| l.starts_with("id = ")).unwrap();
    uuid::Uuid::parse_str(id.trim_start_matches("id = ").trim_matches('"')).unwrap();
    assert_code(&ws.run(&["validate"]), 0);
    assert_code(&ws.run(&["init"]), 1);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("keys.toml")).unwrap(),
        text
    );
    let out = ws.run(&["completions", "bash"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("keyplan"));
}

/// Every valid keys.toml validates against `keyplan schema`, and a few
/// invalid ones do not (checked by Python's jsonschema, an independent validator).
#[test]
fn the_json_schema_accepts_valid_files_and_refuses_invalid_ones() {
    let mut ws = Workspace::new(&estate());
    let out = ws.run(&["schema"]);
    assert_code(&out, 0);
    let schema_path = ws.path().join("keys.schema.json");
    std::fs::write(&schema_path, stdout(&out)).unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut valid = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keys.toml")];
    for entry in std::fs::read_dir(fixtures.join("valid")).unwrap() {
        valid.push(entry.unwrap().path());
    }
    let starter = ws.path().join("starter.toml");
    std::fs::write(&starter, keyplan::cli::starter_for_tests()).unwrap();
    valid.push(starter);
    for path in &valid {
        let out = ws.run(&["-c", path.to_str().unwrap(), "validate"]);
        assert_code(&out, 0);
    }
    let invalid: Vec<_> = std::fs::read_dir(fixtures.join("invalid_schema"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(invalid.len() >= 3);
    let script = r#"
import json, sys, tomllib
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
expect = sys.argv[2]
for path in sys.argv[3:]:
    errors = list(validator.iter_errors(tomllib.load(open(path, "rb"))))
    if expect == "valid" and errors:
        sys.exit(f"{path} should validate: {errors[0].message}")
    if expect == "invalid" and not errors:
        sys.exit(f"{path} should not validate")
print("ok")
"#;
    for (expect, paths) in [("valid", &valid), ("invalid", &invalid)] {
        let mut child = Command::new(keyplan_test_support::venv_bin("python"))
            .arg("-")
            .arg(&schema_path)
            .arg(expect)
            .args(paths.iter())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
