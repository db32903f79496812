//! Invalid keys.toml files: each error names the file, line and column, says
//! what is wrong and, where it can, how to fix it.

use std::path::Path;

const BASE: &str = r#"[environment]
name = "dev"

[authority]
kind = "local"

[store]
kind = "local"

[services.api]
consumers = ["web"]

[consumers.web]
"#;

const FUSIONAUTH: &str = r#"[authority]
kind = "fusionauth"
url = "https://auth.example.com"
api_key_env = "FUSIONAUTH_API_KEY"
permissions = { "/api/status" = ["GET"] }
"#;

const SSM: &str = r#"[store]
kind = "ssm"
prefix = "/keyplan"
region = "us-east-1"
kms_key_id = "alias/keyplan"
"#;

fn with_fusionauth() -> String {
    BASE.replace("[authority]\nkind = \"local\"\n", FUSIONAUTH)
        .replace("[store]\nkind = \"local\"\n", SSM)
}

/// The 1-based line and column of the first `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Parses `text` and asserts an error at `needle` whose message contains `message`.
#[track_caller]
fn assert_error(text: &str, needle: &str, message: &str) -> String {
    let error =
        keyplan::config::parse(Path::new("keys.toml"), text).expect_err("the config is invalid");
    let (line, column) = if needle.is_empty() {
        (1, 1)
    } else {
        position(text, needle)
    };
    let expected = format!("error: keys.toml:{line}:{column}: ");
    let rendered = &error.rendered;
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with(&expected) && l.contains(message)),
        "expected `{expected}...{message}` in:\n{rendered}"
    );
    rendered.clone()
}

#[test]
fn every_invalid_case_says_where_and_what() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            BASE.replace("name = \"dev\"", "name = dev"),
            "dev\n",
            "invalid TOML",
        ),
        (
            BASE.replace("[environment]\nname = \"dev\"\n", ""),
            "",
            "missing table [environment]",
        ),
        (
            BASE.replace("[authority]\nkind = \"local\"\n", ""),
            "",
            "missing table [authority]",
        ),
        (
            BASE.replace("[store]\nkind = \"local\"\n", ""),
            "",
            "missing table [store]",
        ),
        (
            format!("{BASE}[servics.x]\nconsumers = []\n"),
            "servics",
            "unknown field `servics` in keys.toml",
        ),
        (
            BASE.replace("consumers = [\"web\"]", "consumer = [\"web\"]"),
            "consumer =",
            "unknown field `consumer` in [services.api]",
        ),
        (
            BASE.replace("[services.api]", "[services.API]"),
            "API",
            "invalid service name `API`",
        ),
        (
            format!("{BASE}[consumers.Web]\n"),
            "Web]",
            "invalid consumer name `Web`",
        ),
        (
            BASE.replace("[\"web\"]", "[\"wbe\"]"),
            "\"wbe\"",
            "unknown consumer `wbe` in [services.api]",
        ),
        (
            BASE.replace("[\"web\"]", "[\"web\", \"web\"]"),
            "\"web\"]",
            "consumer `web` is listed twice",
        ),
        (
            BASE.replace("[\"web\"]", "[\"api\"]"),
            "\"api\"",
            "service `api` lists itself as a consumer",
        ),
        (
            BASE.replace("[\"web\"]", "\"web\""),
            "\"web\"",
            "consumers must be an array, not a string",
        ),
        (
            format!("{BASE}[rotation]\nevery = \"90w\"\n"),
            "\"90w\"",
            "unknown unit \"w\"",
        ),
        (
            format!("{BASE}[rotation]\npropagation = \"10\"\n"),
            "\"10\"",
            "missing unit",
        ),
        (
            format!("{BASE}[rotation]\npropagation = \"1m\"\n"),
            "\"1m\"",
            "propagation 1m is too short for api<-web",
        ),
        (
            format!("{BASE}[rotation]\ngrace = \"2m\"\n"),
            "\"2m\"",
            "grace 2m is too short for api<-web",
        ),
        (
            format!("{BASE}[rotation]\nevery = \"1d\"\n"),
            "\"1d\"",
            "must be longer than propagation + grace",
        ),
        (
            format!("{BASE}[readers]\nrefresh = \"restart\"\n"),
            "\"restart\"",
            "a `restart` reader needs `max_restart`",
        ),
        (
            format!("{BASE}[readers]\nrefresh = \"often\"\n"),
            "\"often\"",
            "[readers] refresh",
        ),
        (
            format!("{BASE}[rotation]\nspread = \"100d\"\n"),
            "\"100d\"",
            "spread 100d must be shorter than every 90d",
        ),
        (
            BASE.replace("kind = \"local\"\n\n[store]", "kind = \"vault\"\n\n[store]"),
            "\"vault\"",
            "unknown authority kind",
        ),
        (
            with_fusionauth().replace("permissions = { \"/api/status\" = [\"GET\"] }\n", ""),
            "[authority]",
            "missing field `permissions` in [authority]",
        ),
        (
            with_fusionauth().replace("{ \"/api/status\" = [\"GET\"] }", "{}"),
            "{}",
            "authority.permissions is empty",
        ),
        (
            with_fusionauth().replace(
                "\"/api/status\" = [\"GET\"]",
                "\"/api/api-key\" = [\"GET\"]",
            ),
            "\"/api/api-key\"",
            "must not reach the API Key API",
        ),
        (
            with_fusionauth().replace("\"/api/status\"", "\"/api/statu\""),
            "\"/api/statu\"",
            "unknown FusionAuth endpoint",
        ),
        (
            with_fusionauth().replace("[\"GET\"]", "[\"DELETE\"]"),
            "\"DELETE\"",
            "endpoint /api/status has no method DELETE",
        ),
        (
            with_fusionauth().replace(
                "\"FUSIONAUTH_API_KEY\"",
                "\"bf69486b-4733-4470-a592-f1bfce7af580\"",
            ),
            "\"bf69",
            "must name an environment variable",
        ),
        (
            with_fusionauth().replace("https://auth.example.com", "ftp://auth.example.com"),
            "\"ftp:",
            "authority.url must be an http:// or https:// URL",
        ),
        (
            with_fusionauth().replace("prefix = \"/keyplan\"", "prefix = \"keyplan\""),
            "\"keyplan\"",
            "store.prefix must start with `/`",
        ),
        (
            with_fusionauth().replace("prefix = \"/keyplan\"", "prefix = \"/key//plan\""),
            "\"/key//plan\"",
            "must not contain `//`",
        ),
        (
            with_fusionauth().replace("prefix = \"/keyplan\"", "prefix = \"/aws/keys\""),
            "\"/aws/keys\"",
            "must not start with `aws` or `ssm`",
        ),
        (
            with_fusionauth().replace("prefix = \"/keyplan\"", "prefix = \"/key plan\""),
            "\"/key plan\"",
            "must not contain spaces",
        ),
        (
            with_fusionauth().replace("region = \"us-east-1\"", "region = \"\""),
            "\"\"\nkms",
            "store.region is empty",
        ),
        (
            with_fusionauth().replace(
                "region = \"us-east-1\"",
                "region = \"us-east-1\"\nendpoint = \"localhost:4566\"",
            ),
            "\"localhost",
            "store.endpoint must be an http:// or https:// URL",
        ),
        (
            BASE.replace(
                "kind = \"local\"\n\n[services",
                "kind = \"s3\"\n\n[services",
            ),
            "\"s3\"",
            "unknown store kind `s3`",
        ),
        (
            BASE.replace("name = \"dev\"", "name = \"dev\"\nid = \"not-a-uuid\""),
            "\"not-a-uuid\"",
            "environment.id must be a UUID",
        ),
        (
            with_fusionauth()
                .replace(
                    "[services.api]\nconsumers = [\"web\"]",
                    &format!(
                        "[services.{s}]\nconsumers = [\"{c}\"]\n[consumers.{c}]",
                        s = "s".repeat(63),
                        c = "c".repeat(63)
                    ),
                )
                .replace("[consumers.web]\n", ""),
            "\"ccc",
            "FusionAuth allows 191",
        ),
        (
            BASE.replace("name = \"dev\"", "name = 7"),
            "7",
            "environment.name must be a string, not an integer",
        ),
    ];
    assert!(cases.len() >= 25);
    for (text, needle, message) in &cases {
        assert_error(text, needle, message);
    }
}

#[test]
fn unknown_fields_suggest_the_closest_name() {
    let text = BASE.replace("consumers = [\"web\"]", "consumer = [\"web\"]");
    let rendered = assert_error(&text, "consumer =", "unknown field");
    assert!(
        rendered.contains("hint: did you mean `consumers`?"),
        "{rendered}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = format!(
        "{BASE}[rotation]\nevery = \"9x\"\npropagation = \"1m\"\n[services.Bad]\nconsumers = [\"nobody\"]\n"
    );
    let error = keyplan::config::parse(Path::new("keys.toml"), &text).unwrap_err();
    let errors = error
        .rendered
        .lines()
        .filter(|l| l.starts_with("error: "))
        .count();
    assert!(errors >= 4, "{}", error.rendered);
    assert_eq!(
        error.to_string(),
        format!("keys.toml is not valid ({errors} errors)")
    );
}

#[test]
fn authority_values_are_never_quoted() {
    let secret = "bf69486b4733hunter2a592f1bfce7af580";
    let text = with_fusionauth()
        .replace("\"FUSIONAUTH_API_KEY\"", &format!("\"{secret}\""))
        .replace("https://auth.example.com", "ftp://secret-host.example.com");
    let error = keyplan::config::parse(Path::new("keys.toml"), &text).unwrap_err();
    assert!(
        error.rendered.contains("looks like a key value"),
        "{}",
        error.rendered
    );
    assert!(!error.rendered.contains(secret), "{}", error.rendered);
    assert!(
        !error.rendered.contains("secret-host"),
        "{}",
        error.rendered
    );
    // A TOML syntax error inside [authority] does not quote the line either.
    let broken = with_fusionauth().replace("\"FUSIONAUTH_API_KEY\"", &format!("\"{secret}"));
    let error = keyplan::config::parse(Path::new("keys.toml"), &broken).unwrap_err();
    assert!(!error.rendered.contains(secret), "{}", error.rendered);
}

#[test]
fn the_root_keys_toml_is_valid_and_warns_about_nothing() {
    let text = crate::support::estate();
    let loaded = keyplan::config::parse(Path::new("keys.toml"), &text).unwrap();
    assert_eq!(loaded.warnings, "");
    assert_eq!(loaded.config.edges.len(), 3);
    let ssm = keyplan::config::parse(
        Path::new("keys.toml"),
        &with_fusionauth().replace("kms_key_id = \"alias/keyplan\"\n", ""),
    )
    .unwrap();
    assert!(
        ssm.warnings.contains("warning: keys.toml:"),
        "{}",
        ssm.warnings
    );
    assert!(
        ssm.warnings.contains("no store.kms_key_id"),
        "{}",
        ssm.warnings
    );
}
