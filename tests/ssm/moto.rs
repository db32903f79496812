//! The SSM store and lock over the wire, against moto: one server for the
//! test binary, each test in an environment of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region};
use jiff::{SignedDuration, Timestamp};
use keyplan::provider::ssm::{SsmLockSettings, SsmSettings, SsmStore};
use keyplan::provider::{Lock, LockError, LockRecord, Store};
use keyplan::secret::Secret;
use keyplan_runtime::record::{AcceptedKey, AcceptsDocument, Fingerprint, KeyState, Layout};
use keyplan_test_support::{moto, unique_name};

fn credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "keyplan-tests")
}

/// A client for moto, built by hand (so `behavior_version` is set).
pub fn client() -> Client {
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(moto().url())
        .credentials_provider(credentials())
        .build();
    Client::from_conf(config)
}

fn store(settings: SsmSettings) -> SsmStore {
    SsmStore::new(client(), settings)
}

fn layout(stem: &str) -> Layout {
    Layout::new("/keyplan-test", &unique_name(stem))
}

fn lock_record(id: &str, now: Timestamp, lease_secs: i64) -> LockRecord {
    LockRecord {
        id: id.into(),
        holder: format!("holder-{id}"),
        operation: "apply".into(),
        started: now,
        expires: now + SignedDuration::from_secs(lease_secs),
    }
}

fn accepts_for(key: &Secret, generation: u64) -> AcceptsDocument {
    let now = Timestamp::now();
    AcceptsDocument::new(vec![AcceptedKey {
        id: uuid::Uuid::new_v4().to_string(),
        generation,
        sha256: key.digest(),
        state: KeyState::Current,
        due: now,
        staged: now,
        until: None,
    }])
}

#[tokio::test]
async fn the_config_loader_reaches_moto_with_adaptive_retries() {
    let config = keyplan::provider::ssm::config_loader(Some("us-east-1"), Some(&moto().url()))
        .credentials_provider(credentials())
        .load()
        .await;
    let retry = config.retry_config().unwrap();
    assert_eq!(
        retry.mode(),
        aws_sdk_ssm::config::retry::RetryMode::Adaptive
    );
    assert_eq!(retry.max_attempts(), 8);
    let store = SsmStore::new(Client::new(&config), SsmSettings::default());
    let name = format!("{}/keyplan/probe", layout("loader").root());
    assert!(store.get(&name).await.unwrap().is_none());
}

#[tokio::test]
async fn writes_only_changes_and_reads_back_what_it_wrote() {
    let mut tags = BTreeMap::new();
    tags.insert("managed-by".to_owned(), "keyplan".to_owned());
    let store = store(SsmSettings {
        kms_key_id: Some("alias/keyplan-test".into()),
        writes_per_second: None,
        tags,
    });
    assert!(store.warnings().is_empty());
    let l = layout("store");
    let name = l.consumer_key("gateway", "catalog");
    let key = Secret::generate();
    let fingerprint = Fingerprint::new("catalog", "gateway", 1, &key.digest()).to_string();

    let v1 = store.put(&name, &key, Some(&fingerprint)).await.unwrap();
    let puts = || keyplan::provider::ssm::CallCounts::get(&store.counts().put_parameter);
    let before = puts();
    let again = store.put(&name, &key, Some(&fingerprint)).await.unwrap();
    assert_eq!(
        (v1, again, puts()),
        (1, 1, before),
        "an unchanged value is not written"
    );

    let read = store.get(&name).await.unwrap().unwrap();
    assert_eq!(read.value.as_ref(), Some(&key));
    assert_eq!(read.description.as_deref(), Some(fingerprint.as_str()));
    assert!(
        !format!("{read:?}").contains(key.expose()),
        "Debug never shows a key"
    );

    // SecureString, Standard tier, the KMS key, and the tags.
    let meta = client()
        .describe_parameters()
        .parameter_filters(
            aws_sdk_ssm::types::ParameterStringFilter::builder()
                .key("Name")
                .option("Equals")
                .values(&name)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let meta = &meta.parameters()[0];
    assert_eq!(
        meta.r#type(),
        Some(&aws_sdk_ssm::types::ParameterType::SecureString)
    );
    assert_eq!(
        meta.tier(),
        Some(&aws_sdk_ssm::types::ParameterTier::Standard)
    );
    assert_eq!(meta.key_id(), Some("alias/keyplan-test"));
    let tags = client()
        .list_tags_for_resource()
        .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
        .resource_id(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tag_list()[0].key(), "managed-by");

    let next = Secret::generate();
    assert_eq!(
        store.put(&name, &next, Some(&fingerprint)).await.unwrap(),
        2
    );
    store.delete(&name).await.unwrap();
    store.delete(&name).await.unwrap(); // absent: fine
    assert!(store.get(&name).await.unwrap().is_none());
}

#[tokio::test]
async fn without_a_kms_key_the_store_warns() {
    let warnings = store(SsmSettings::default()).warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("aws/ssm"), "{}", warnings[0]);
}

/// 250 edges seeded through the SDK; one observation in pages.
#[tokio::test]
async fn observes_250_edges_in_pages_and_decrypts_only_what_it_is_asked() {
    let l = layout("pages");
    let c = client();
    let mut keys = BTreeMap::new();
    for i in 0..250 {
        let (service, consumer) = (format!("svc{:03}", i / 10), format!("con{:03}", i));
        let key = Secret::generate();
        let fingerprint = Fingerprint::new(&service, &consumer, 1, &key.digest()).to_string();
        for (name, value, description) in [
            (
                l.consumer_key(&consumer, &service),
                key.expose().to_owned(),
                Some(fingerprint),
            ),
            (
                l.accepts(&service, &consumer),
                accepts_for(&key, 1).to_json().unwrap(),
                None,
            ),
        ] {
            c.put_parameter()
                .name(name)
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .set_description(description)
                .send()
                .await
                .unwrap();
        }
        keys.insert((service, consumer), key);
    }
    // One more, so the count is not a multiple of ten (see the last assert).
    c.put_parameter()
        .name(l.lock())
        .value("{}")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();

    let store = store(SsmSettings::default());
    let root = l.root().to_owned();
    let is_accepts = |name: &str| name.contains("/accepts/");
    let listed = store.list(&root, &is_accepts).await.unwrap();
    assert_eq!(listed.len(), 501);
    let by_path = keyplan::provider::ssm::CallCounts::get(&store.counts().get_parameters_by_path);
    assert_eq!(
        by_path,
        501u64.div_ceil(10),
        "by-path calls for 501 parameters"
    );
    assert!(
        listed.windows(2).all(|w| w[0].name < w[1].name),
        "name order"
    );
    for ((service, consumer), key) in &keys {
        let accepts = listed
            .iter()
            .find(|p| p.name == l.accepts(service, consumer))
            .unwrap();
        let doc = AcceptsDocument::parse(accepts.value.as_ref().unwrap().expose()).unwrap();
        assert_eq!(doc.keys[0].sha256, key.digest());
        let consumer_key = listed
            .iter()
            .find(|p| p.name == l.consumer_key(consumer, service))
            .unwrap();
        assert!(
            consumer_key.value.is_none(),
            "consumer keys are not decrypted"
        );
        let fingerprint = Fingerprint::parse(consumer_key.description.as_deref().unwrap()).unwrap();
        assert!(fingerprint.matches(&key.digest()));
    }

    // 500 parameters: moto, like SSM, may end a full last page with a
    // NextToken whose page is empty; the reader cannot know without asking.
    c.delete_parameter().name(l.lock()).send().await.unwrap();
    let store = store_fresh();
    assert_eq!(store.list(&root, &|_| false).await.unwrap().len(), 500);
    let by_path = keyplan::provider::ssm::CallCounts::get(&store.counts().get_parameters_by_path);
    assert!(
        by_path <= 500 / 10 + 1,
        "{by_path} by-path calls for 500 parameters"
    );
}

fn store_fresh() -> SsmStore {
    store(SsmSettings::default())
}

/// What apply writes, read back by awscli and by a Python reader of the
/// accepts document that checks the key by its digest.
#[tokio::test]
async fn awscli_and_python_read_what_the_store_wrote() {
    let l = layout("interop");
    let store = store(SsmSettings::default());
    let key = Secret::generate();
    let fingerprint = Fingerprint::new("catalog", "gateway", 1, &key.digest()).to_string();
    store
        .put(
            &l.consumer_key("gateway", "catalog"),
            &key,
            Some(&fingerprint),
        )
        .await
        .unwrap();
    let accepts = Secret::new(accepts_for(&key, 1).to_json().unwrap());
    store
        .put(&l.accepts("catalog", "gateway"), &accepts, None)
        .await
        .unwrap();

    assert_eq!(
        super::cli::aws_get(&l.consumer_key("gateway", "catalog")),
        key.expose()
    );
    assert_eq!(
        super::cli::python_state(&l.accepts("catalog", "gateway"), key.expose()),
        "current"
    );
}

fn lock_settings() -> SsmLockSettings {
    SsmLockSettings {
        skew: Duration::ZERO,
        pause: Duration::from_millis(20),
        ..SsmLockSettings::default()
    }
}

#[tokio::test]
async fn a_held_lock_names_its_holder_and_an_expired_one_is_taken_over() {
    let l = layout("lock");
    let store = store_fresh();
    let first = store.lock(&l.lock(), lock_settings());
    let now = Timestamp::now();
    let a = lock_record("a", now, 600);
    first.acquire(&a, now).await.unwrap();

    let second = store.lock(&l.lock(), lock_settings());
    match second.acquire(&lock_record("b", now, 600), now).await {
        Err(error @ LockError::Held(_)) => {
            assert!(error.to_string().contains("holder-a"), "{error}")
        }
        other => panic!("expected Held, got {other:?}"),
    }
    // --lock-timeout: waits, then fails naming the holder.
    let started = std::time::Instant::now();
    let error = keyplan::provider::ssm::acquire_with_timeout(
        &second,
        &mut |now| lock_record("b", now, 600),
        Duration::from_millis(400),
        Duration::from_millis(100),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(matches!(error, LockError::Held(h) if h.id == "a"));

    let mut renewed = a.clone();
    renewed.expires = now + SignedDuration::from_secs(900);
    first.renew(&renewed, now).await.unwrap();
    first.verify(&renewed, now).await.unwrap();

    let later = now + SignedDuration::from_secs(901);
    let b = lock_record("b", later, 600);
    second.acquire(&b, later).await.unwrap();
    assert!(matches!(
        first.verify(&renewed, later).await,
        Err(LockError::Lost(_))
    ));
    assert!(matches!(
        first.renew(&renewed, now).await,
        Err(LockError::Lost(_))
    ));
    first.release(&renewed).await.unwrap(); // not ours any more: leaves b alone
    assert_eq!(second.current().await.unwrap().unwrap().id, "b");
    assert_eq!(first.force_unlock("b").await.unwrap().id, "b");
    assert!(second.current().await.unwrap().is_none());
}

/// 8 contenders x 20 rounds on an expired lock, over the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_contenders_twenty_rounds_on_moto() {
    let l = layout("race");
    let store = Arc::new(store_fresh());
    let base = Timestamp::now();
    store
        .lock(&l.lock(), lock_settings())
        .acquire(&lock_record("initial", base, 1), base)
        .await
        .unwrap();
    for round in 0..20i64 {
        let now = base + SignedDuration::from_mins(60 * (round + 1));
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (store, barrier, name) = (store.clone(), barrier.clone(), l.lock());
            tasks.push(tokio::spawn(async move {
                let lock = store.lock(&name, lock_settings());
                let record = lock_record(&format!("r{round}-c{i}"), now, 600);
                barrier.wait().await;
                let result = lock.acquire(&record, now).await;
                (record.id, result)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (id, result) = task.await.unwrap();
            match result {
                Ok(()) => winners.push(id),
                Err(LockError::Held(_)) => {}
                Err(other) => panic!("round {round}: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let current = store
            .lock(&l.lock(), lock_settings())
            .current()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(current.id, winners[0], "round {round}");
    }
}
