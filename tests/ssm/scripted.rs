//! What moto does not do, from a scripted HTTP server speaking SSM's JSON
//! protocol: pages shorter than ten with a NextToken, and throttling.

use std::sync::{Arc, Mutex};

use aws_sdk_ssm::config::Credentials;
use keyplan::provider::Store;
use keyplan::provider::ssm::{CallCounts, SsmSettings, SsmStore, config_loader};
use keyplan::secret::Secret;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// Answers each request with the next (status, body) of the script and
/// records the `X-Amz-Target` of every request.
async fn serve(script: Vec<(u16, String)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut script = script.into_iter();
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            // One request per connection turn; keep-alive handled by looping.
            loop {
                let mut buffer = Vec::new();
                let header_end = loop {
                    let mut chunk = [0u8; 4096];
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                };
                let Some(header_end) = header_end else { break };
                let head = String::from_utf8_lossy(&buffer[..header_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while buffer.len() < header_end + length {
                    let mut chunk = [0u8; 4096];
                    let n = socket.read(&mut chunk).await.unwrap();
                    buffer.extend_from_slice(&chunk[..n]);
                }
                let target = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-amz-target:"))
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                log.lock().unwrap().push(target);
                let (status, body) = script.next().expect("the script has an answer");
                let reason = if status == 200 { "OK" } else { "Bad Request" };
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: application/x-amz-json-1.1\r\n\
                     content-length: {}\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
            }
        }
    });
    (url, seen)
}

async fn store_at(url: &str) -> SsmStore {
    let config = config_loader(Some("us-east-1"), Some(url))
        .credentials_provider(Credentials::new("t", "t", None, None, "scripted"))
        .load()
        .await;
    SsmStore::new(aws_sdk_ssm::Client::new(&config), SsmSettings::default())
}

fn page(names: &[&str], token: Option<&str>) -> (u16, String) {
    let parameters: Vec<serde_json::Value> = names
        .iter()
        .map(|n| serde_json::json!({"Name": n, "Type": "SecureString", "Value": "ciphertext", "Version": 1}))
        .collect();
    let mut body = serde_json::json!({ "Parameters": parameters });
    if let Some(token) = token {
        body["NextToken"] = token.into();
    }
    (200, body.to_string())
}

#[tokio::test]
async fn short_pages_with_a_next_token_are_followed() {
    let (url, seen) = serve(vec![
        page(&["/kp/e/a", "/kp/e/b", "/kp/e/c"], Some("t1")),
        page(&[], Some("t2")),
        page(&["/kp/e/d"], None),
        (
            200,
            r#"{"Parameters":[{"Name":"/kp/e/b","Description":"fp-b","Version":1}]}"#.into(),
        ),
    ])
    .await;
    let store = store_at(&url).await;
    let listed = store.list("/kp/e", &|_| false).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["/kp/e/a", "/kp/e/b", "/kp/e/c", "/kp/e/d"]);
    assert_eq!(listed[1].description.as_deref(), Some("fp-b"));
    assert_eq!(CallCounts::get(&store.counts().get_parameters_by_path), 3);
    assert!(
        seen.lock().unwrap()[..3]
            .iter()
            .all(|t| t.ends_with("getparametersbypath"))
    );
}

#[tokio::test]
async fn throttled_writes_are_retried_by_the_sdk_with_backoff() {
    let throttled = (
        400,
        r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_owned(),
    );
    let (url, seen) = serve(vec![
        (
            400,
            r#"{"__type":"ParameterNotFound","message":"not found"}"#.into(),
        ),
        throttled.clone(),
        throttled,
        (200, r#"{"Version":1,"Tier":"Standard"}"#.into()),
    ])
    .await;
    let store = store_at(&url).await;
    let version = store
        .put("/kp/e/consumers/c/keys/s", &Secret::new("k".into()), None)
        .await
        .unwrap();
    assert_eq!(version, 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen[0].ends_with("getparameter"), "{seen:?}");
    assert!(
        seen[1..].iter().all(|t| t.ends_with("putparameter")),
        "{seen:?}"
    );
}
