//! `fake-fusionauth`: the fake on a fixed port, for trying keyplan's
//! production flow without a FusionAuth server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use clap::Parser;
use fake_fusionauth::FakeFusionAuth;

/// A fake FusionAuth (API Key API) for tests and local trials. Prints its URL on stdout.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Port to listen on (FusionAuth's default is 9011; 0 picks a free one).
    #[arg(long, default_value_t = 9011)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Name of the environment variable holding the key-manager key to seed
    /// (a global super key, as Kickstart would create). Never the value itself.
    #[arg(long, value_name = "NAME")]
    manager_key_env: Option<String>,
    /// Print one line per API request on stderr (method, path, status).
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let manager_key = match &args.manager_key_env {
        None => None,
        Some(name) => match std::env::var(name) {
            Ok(value) if !value.is_empty() => Some(value),
            _ => {
                eprintln!("error: the environment variable {name} is not set or empty");
                eprintln!("hint: export {name}=<key-manager key> before starting the fake");
                return ExitCode::FAILURE;
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start a tokio runtime\nCaused by: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let addr = SocketAddr::new(args.host, args.port);
        let fake = match FakeFusionAuth::bind(addr).await {
            Ok(fake) => fake,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}\nCaused by: {e}");
                return ExitCode::FAILURE;
            }
        };
        fake.log_to_stderr(args.verbose);
        if let Some(key) = manager_key {
            let record = fake.seed_manager_key(&key, None);
            eprintln!("fake-fusionauth: seeded key-manager key {}", record.id);
        } else {
            eprintln!(
                "fake-fusionauth: no --manager-key-env: seed keys with POST {}/_fake/keys",
                fake.url()
            );
        }
        println!("{}", fake.url());
        let _ = tokio::signal::ctrl_c().await;
        ExitCode::SUCCESS
    })
}
