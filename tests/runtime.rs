//! keyplan-runtime reads what `keyplan apply` writes: a service's key ring
//! accepts its consumer's key, and after a rotation the new key is accepted
//! once the ring refreshes, on the local store and on SSM (moto).

use std::time::Duration;

use keyplan_runtime::KeyRing;
use keyplan_runtime::record::{KeyState, Layout};
use keyplan_test_support::{moto, unique_name};

use crate::support::{Workspace, assert_code, estate};

fn consumer_key(ws: &Workspace, environment: &str, via_ssm: bool) -> String {
    let name = Layout::new("/keyplan", environment).consumer_key("gateway", "product-catalog");
    if via_ssm {
        crate::ssm::cli::aws_get(&name)
    } else {
        ws.consumer_key("gateway", "product-catalog").unwrap()
    }
}

/// Applies, builds the catalog's ring, rotates immediately, and checks that
/// the new key is accepted after `refresh_now` and the old one no longer.
async fn rotation_reaches_the_ring(
    mut ws: Workspace,
    environment: &str,
    ring: impl AsyncFnOnce() -> KeyRing,
    via_ssm: bool,
) {
    let env: Vec<(&str, String)> = if via_ssm {
        moto().aws_env()
    } else {
        Vec::new()
    };
    let run = |ws: &mut Workspace, args: &[&str]| {
        let out = ws.command(args).envs(env.clone()).output().unwrap();
        ws.record(&out);
        out
    };
    assert_code(&run(&mut ws, &["apply", "--auto-approve"]), 0);
    let first = consumer_key(&ws, environment, via_ssm);
    let ring = ring().await;
    let caller = ring
        .check([first.as_bytes()])
        .expect("the applied key is accepted");
    assert_eq!(
        (caller.consumer.as_str(), caller.generation, caller.state),
        ("gateway", 1, KeyState::Current)
    );
    assert!(
        ring.check([b"not-a-key-of-anyone-at-all-000000".as_slice()])
            .is_err()
    );

    assert_code(
        &run(
            &mut ws,
            &[
                "rotate",
                "product-catalog<-gateway",
                "--immediately",
                "--auto-approve",
            ],
        ),
        0,
    );
    let second = consumer_key(&ws, environment, via_ssm);
    assert_ne!(first, second);
    assert!(
        ring.check([second.as_bytes()]).is_err(),
        "not before the ring refreshes"
    );
    ring.refresh_now().await.unwrap();
    let caller = ring
        .check([second.as_bytes()])
        .expect("accepted after the refresh");
    assert_eq!(caller.generation, 2);
    assert!(
        ring.check([first.as_bytes()]).is_err(),
        "the replaced key is refused"
    );
    crate::support::MINTED
        .lock()
        .unwrap()
        .extend([first, second]);
    ws.assert_no_leaks();
}

#[tokio::test]
async fn the_ring_accepts_what_apply_wrote_in_the_local_store() {
    let ws = Workspace::new(&estate());
    let dir = ws.store();
    rotation_reaches_the_ring(
        ws,
        "dev",
        async move || {
            KeyRing::builder("product-catalog")
                .local(dir)
                .environment("dev")
                .refresh_every(Duration::from_secs(3600))
                .build()
                .await
                .unwrap()
        },
        false,
    )
    .await;
}

#[tokio::test]
async fn the_ring_accepts_what_apply_wrote_in_ssm() {
    let environment = unique_name("runtime");
    let ws = Workspace::new(&crate::ssm::cli::ssm_estate(&environment));
    let env = environment.clone();
    rotation_reaches_the_ring(
        ws,
        &environment,
        async move || {
            KeyRing::builder("product-catalog")
                .ssm(crate::ssm::moto::client())
                .environment(env)
                .refresh_every(Duration::from_secs(3600))
                .build()
                .await
                .unwrap()
        },
        true,
    )
    .await;
}
