//! Refresh against the real stores: the local directory store and SSM (moto).
//! A document written into the store, as `keyplan apply` writes it, is
//! accepted after the next refresh; a failed refresh keeps the last good set.

mod common;

#[cfg(feature = "local")]
mod local {
    use std::path::Path;
    use std::time::Duration;

    use jiff::{SignedDuration, Timestamp};
    use keyplan_runtime::record::{AcceptsDocument, KeyState, Layout};
    use keyplan_runtime::{ConsumerKeys, Freshness, KeyRing, Rejection};

    use crate::common::{K1, K2, R1, accepted, current, document};

    /// Writes `{dir}{name}` as the local store does: a temporary file, then a rename.
    fn put(dir: &Path, name: &str, value: &str) {
        let file = dir.join(name.trim_start_matches('/'));
        let parent = file.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        let temp = parent.join(format!(
            ".{}.tmp",
            file.file_name().unwrap().to_str().unwrap()
        ));
        std::fs::write(&temp, value).unwrap();
        std::fs::rename(&temp, &file).unwrap();
    }

    fn layout() -> Layout {
        Layout::new("/keyplan", "dev")
    }

    #[tokio::test]
    async fn a_written_key_is_accepted_after_refresh_now_and_a_failure_keeps_the_last_good_set() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(".keyplan");
        put(&dir, &layout().accepts("catalog", "gateway"), &current(K1));
        // keyplan's own files and a writer's temporary file are not parameters.
        put(&dir, "/index.json", "{}");
        std::fs::write(
            dir.join("keyplan/dev/services/catalog/accepts/.reporting.tmp"),
            "half a docu",
        )
        .unwrap();
        // Below the accepts path: not read (the read is not recursive).
        put(
            &dir,
            &format!(
                "{}/nested/reporting",
                layout().service_accepts_path("catalog")
            ),
            &current(R1),
        );

        let ring = KeyRing::builder("catalog")
            .local(&dir)
            .environment("dev")
            .refresh_every(Duration::from_secs(3600))
            .build()
            .await
            .unwrap();
        assert_eq!(ring.check([K1.as_bytes()]).unwrap().consumer, "gateway");
        assert_eq!(ring.check([R1.as_bytes()]), Err(Rejection::Unknown));
        assert!(
            ring.status().problems.is_empty(),
            "{:?}",
            ring.status().problems
        );

        // `keyplan apply` stages K2.
        put(
            &dir,
            &layout().accepts("catalog", "gateway"),
            &document(vec![
                accepted(K1, 1, KeyState::Current, None),
                accepted(K2, 2, KeyState::Pending, None),
            ]),
        );
        assert_eq!(ring.check([K2.as_bytes()]), Err(Rejection::Unknown));
        ring.refresh_now().await.unwrap();
        let caller = ring.check([K2.as_bytes()]).unwrap();
        assert_eq!((caller.generation, caller.state), (2, KeyState::Pending));
        assert_eq!(ring.status().freshness, Freshness::Fresh);

        // The store disappears: the refresh fails, the last good set stays.
        std::fs::rename(&dir, root.path().join("moved")).unwrap();
        let error = ring.refresh_now().await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("/keyplan/dev/services/catalog/accepts"),
            "{error}"
        );
        assert!(ring.check([K1.as_bytes()]).is_ok());
        assert!(ring.check([K2.as_bytes()]).is_ok());
        let status = ring.status();
        assert_eq!(status.freshness, Freshness::Stale);
        assert!(status.last_error.unwrap().contains("does not exist"));
        // ... until the maximum age (a day by default), and not after.
        let loaded = status.loaded_at.unwrap();
        let later = |hours| loaded + SignedDuration::from_hours(hours);
        assert!(ring.check_at([K1.as_bytes()], later(23)).is_ok());
        assert_eq!(
            ring.check_at([K1.as_bytes()], later(25)),
            Err(Rejection::Unavailable)
        );
        assert_eq!(ring.status_at(later(25)).freshness, Freshness::Expired);

        // The store comes back: the next refresh recovers.
        std::fs::rename(root.path().join("moved"), &dir).unwrap();
        ring.refresh_now().await.unwrap();
        assert_eq!(ring.status().freshness, Freshness::Fresh);
    }

    #[tokio::test]
    async fn the_background_refresh_picks_up_a_revoke() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(".keyplan");
        put(&dir, &layout().accepts("catalog", "gateway"), &current(K1));
        let ring = KeyRing::builder("catalog")
            .local(&dir)
            .environment("dev")
            .refresh_every(Duration::from_millis(50))
            .build()
            .await
            .unwrap();
        assert!(ring.check([K1.as_bytes()]).is_ok());
        let tombstone = AcceptsDocument::tombstone(vec!["id-1".into()])
            .to_json()
            .unwrap();
        put(&dir, &layout().accepts("catalog", "gateway"), &tombstone);
        let deadline = Timestamp::now() + SignedDuration::from_secs(10);
        while ring.check([K1.as_bytes()]).is_ok() {
            assert!(
                Timestamp::now() < deadline,
                "the background refresh never ran"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ring.check([K1.as_bytes()]), Err(Rejection::Unknown));
    }

    #[tokio::test]
    async fn consumer_keys_follow_the_store_and_remember_the_replaced_key() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(".keyplan");
        put(&dir, &layout().consumer_key("gateway", "catalog"), K1);
        let keys = ConsumerKeys::builder("gateway")
            .local(&dir)
            .environment("dev")
            .refresh_every(Duration::from_secs(3600))
            .build()
            .await
            .unwrap();
        let sent = keys.key_for("catalog").unwrap();
        assert_eq!(sent.expose(), K1);
        // Promote: the consumer's key becomes K2.
        put(&dir, &layout().consumer_key("gateway", "catalog"), K2);
        keys.refresh_now().await.unwrap();
        assert_eq!(keys.key_for("catalog").unwrap().expose(), K2);
        // A 401 for K2 (a service that has not caught up): K1 is tried once.
        let candidates = keys
            .after_unauthorized("catalog", &keys.key_for("catalog").unwrap())
            .await;
        let candidates: Vec<&str> = candidates.iter().map(|k| k.expose()).collect();
        assert_eq!(candidates, [K1]);
        // A refresh failure keeps the last good keys.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(keys.refresh_now().await.is_err());
        assert_eq!(keys.key_for("catalog").unwrap().expose(), K2);
        assert!(keys.last_read().1.is_some());
    }
}

#[cfg(feature = "ssm")]
mod ssm {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use aws_sdk_ssm::config::retry::RetryConfig;
    use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_ssm::types::ParameterType;
    use keyplan_runtime::record::{KeyState, Layout};
    use keyplan_runtime::source::{BoxFuture, Parameter, Source, SourceError, SsmStore};
    use keyplan_runtime::{ConsumerKeys, Freshness, KeyRing, Rejection};
    use keyplan_test_support::{free_port, moto, unique_name};

    use crate::common::{K1, K2, accepted, current, document};

    fn client(url: &str) -> aws_sdk_ssm::Client {
        let config = aws_sdk_ssm::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .retry_config(RetryConfig::disabled())
            .build();
        aws_sdk_ssm::Client::from_conf(config)
    }

    async fn put(client: &aws_sdk_ssm::Client, name: &str, value: &str) {
        client
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    }

    /// Reads through moto, or through a client whose endpoint refuses
    /// connections (an outage), at the flip of a switch.
    #[derive(Debug)]
    struct Outage {
        up: SsmStore,
        down: SsmStore,
        failing: AtomicBool,
    }

    impl Source for Outage {
        fn read_path<'a>(
            &'a self,
            path: &'a str,
        ) -> BoxFuture<'a, Result<Vec<Parameter>, SourceError>> {
            if self.failing.load(Ordering::SeqCst) {
                self.down.read_path(path)
            } else {
                self.up.read_path(path)
            }
        }
    }

    #[tokio::test]
    async fn a_key_put_into_ssm_is_accepted_after_refresh_and_an_outage_keeps_the_last_good_set() {
        let ssm = client(&moto().url());
        let env = unique_name("runtime");
        let layout = Layout::new("/keyplan", &env);
        // More consumers than one page holds, so NextToken must be followed.
        for i in 0..12 {
            let consumer = format!("consumer-{i:02}");
            let key = format!("{consumer}-key-0123456789abcdef");
            put(&ssm, &layout.accepts("catalog", &consumer), &current(&key)).await;
        }
        // Below the path: a non-recursive read does not see it.
        put(
            &ssm,
            &format!("{}/deeper/gateway", layout.service_accepts_path("catalog")),
            &current(K2),
        )
        .await;

        let outage = Arc::new(Outage {
            up: SsmStore::new(ssm.clone()),
            down: SsmStore::new(client(&format!("http://127.0.0.1:{}", free_port()))),
            failing: AtomicBool::new(false),
        });
        let ring = KeyRing::builder("catalog")
            .shared_store(outage.clone())
            .environment(&env)
            .build()
            .await
            .unwrap();
        for i in 0..12 {
            let key = format!("consumer-{i:02}-key-0123456789abcdef");
            assert_eq!(
                ring.check([key.as_bytes()]).unwrap().consumer,
                format!("consumer-{i:02}")
            );
        }
        assert_eq!(ring.check([K2.as_bytes()]), Err(Rejection::Unknown));

        // `keyplan apply` creates the gateway edge.
        put(
            &ssm,
            &layout.accepts("catalog", "gateway"),
            &document(vec![accepted(K1, 1, KeyState::Current, None)]),
        )
        .await;
        ring.refresh_now().await.unwrap();
        assert_eq!(ring.check([K1.as_bytes()]).unwrap().consumer, "gateway");

        // SSM goes away: the refresh fails and the set stays.
        outage.failing.store(true, Ordering::SeqCst);
        let error = ring.refresh_now().await.unwrap_err();
        let chain = format!("{error}: {}", std::error::Error::source(&error).unwrap());
        assert!(chain.contains("GetParametersByPath"), "{chain}");
        assert!(ring.check([K1.as_bytes()]).is_ok());
        assert_eq!(ring.status().freshness, Freshness::Stale);
        // A miss during the outage does not lose the set either.
        assert!(
            ring.authenticate([&b"unknown-key-0123456789abcdef"[..]])
                .await
                .is_err()
        );
        assert!(ring.check([K1.as_bytes()]).is_ok());

        outage.failing.store(false, Ordering::SeqCst);
        ring.refresh_now().await.unwrap();
        assert_eq!(ring.status().freshness, Freshness::Fresh);
    }

    #[tokio::test]
    async fn consumer_keys_are_read_from_ssm() {
        let ssm = client(&moto().url());
        let env = unique_name("runtime");
        let layout = Layout::new("/keyplan", &env);
        put(&ssm, &layout.consumer_key("gateway", "catalog"), K1).await;
        let keys = ConsumerKeys::builder("gateway")
            .ssm(ssm.clone())
            .environment(&env)
            .build()
            .await
            .unwrap();
        assert_eq!(keys.key_for("catalog").unwrap().expose(), K1);
        assert!(keys.key_for("billing").is_err());
        put(&ssm, &layout.consumer_key("gateway", "catalog"), K2).await;
        keys.refresh_now().await.unwrap();
        assert_eq!(keys.key_for("catalog").unwrap().expose(), K2);
    }
}
