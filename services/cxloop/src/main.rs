//! `cxloop`: run the suite (`serve`), prepare a database (`migrate`), make a dev token
//! (`token`), and seed demo data (`demo`). See README.md for the tour.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use cxloop_platform::config::Settings;

#[derive(Parser)]
#[command(
    name = "cxloop",
    version,
    about = "Closed-loop customer-experience suite (gRPC)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// TOML settings file (then CXLOOP_* environment variables, then these flags).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Database URL: sqlite://FILE?mode=rwc (default sqlite://cxloop.db?mode=rwc) or postgres://...
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the services on one gRPC port.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on (default 127.0.0.1:50051).
        #[arg(long)]
        listen: Option<String>,
        /// Run only these services (repeatable), e.g. --only feedback.
        #[arg(long)]
        only: Vec<String>,
        /// Log format: pretty or json.
        #[arg(long)]
        log_format: Option<String>,
        /// Print the effective settings (secrets redacted) and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Creates or upgrades the database tables, then exits.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Prints a dev-mode token the server in this folder accepts (last line of output).
    Token {
        #[command(flatten)]
        common: Common,
        /// Tenant id, e.g. acme.
        #[arg(long)]
        tenant: String,
        /// Role (repeatable): admin, analyst, case_agent, ingest, hr, finance, manager, employee, incentives.
        #[arg(long, required = true)]
        role: Vec<String>,
        /// Subject (user or service id).
        #[arg(long, default_value = "dev-user")]
        subject: String,
        /// Lifetime in hours (1-8784, a leap year).
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=8784))]
        ttl_hours: u64,
    },
    /// Seeds a demo tenant (charter-holiday journey, six months of responses; an organisation
    /// with an answered engagement cycle) through the API.
    Demo {
        #[command(flatten)]
        common: Common,
        /// Server address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Tenant to seed (a dev token is made for it unless --token is given).
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// Use this bearer token instead of making a dev token.
        #[arg(long)]
        token: Option<String>,
        /// Days of history, ending the day the tenant was first seeded (1-3650).
        #[arg(long, default_value_t = 182, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Average responses per day (1-100000).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        per_day: u32,
    },
}

fn settings(common: &Common) -> Result<Settings, String> {
    let mut s = Settings::load(common.config.as_deref())?;
    if let Some(u) = &common.database_url {
        s.database_url = u.clone();
    }
    s.validate()?;
    Ok(s)
}

fn dev_token(
    s: &Settings,
    tenant: &str,
    roles: &[&str],
    subject: &str,
    ttl: Duration,
) -> Result<String, String> {
    if !s.auth.public_keys_file.is_empty() {
        return Err(
            "this server verifies tokens with public keys; get a token from your identity provider"
                .into(),
        );
    }
    cxloop_platform::auth::TenantId::parse(tenant)?;
    for r in roles {
        if cxloop_platform::Role::parse(r).is_none() {
            return Err(format!(
                "unknown role {r:?}; roles: {}",
                cxloop_platform::Role::ALL
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let secret = cxloop_platform::auth::load_or_create_dev_secret(&s.dev_secret_path())?;
    cxloop_platform::auth::mint_hs256(
        &secret,
        &s.auth.issuer,
        &s.auth.audience,
        tenant,
        subject,
        roles,
        ttl,
    )
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve {
            common,
            listen,
            only,
            log_format,
            print_config,
        } => {
            let mut s = settings(&common)?;
            if let Some(l) = listen {
                s.listen = l;
            }
            if !only.is_empty() {
                s.only = only;
            }
            if let Some(f) = log_format {
                s.log_format = f;
            }
            s.validate()?;
            if print_config {
                print!("{}", s.redacted_toml());
                return Ok(());
            }
            let _telemetry = cxloop_platform::telemetry::init(&s.log_format, &s.otlp_endpoint)?;
            let stop = cxloop_platform::shutdown::signal();
            let app = cxloop::Application::build(s).await?;
            app.run_until(stop).await
        }
        Command::Migrate { common } => {
            let s = settings(&common)?;
            cxloop::migrate(&s).await?;
            println!(
                "migrated {}",
                cxloop_platform::config::redact_url(&s.database_url)
            );
            Ok(())
        }
        Command::Token {
            common,
            tenant,
            role,
            subject,
            ttl_hours,
        } => {
            let s = settings(&common)?;
            let roles: Vec<&str> = role.iter().map(String::as_str).collect();
            let token = dev_token(
                &s,
                &tenant,
                &roles,
                &subject,
                Duration::from_secs(ttl_hours * 3600),
            )?;
            eprintln!("token for tenant {tenant}, roles {roles:?}, valid {ttl_hours} h:");
            println!("{token}");
            Ok(())
        }
        Command::Demo {
            common,
            addr,
            tenant,
            token,
            days,
            per_day,
        } => {
            let given = token.is_some();
            let token = match token {
                Some(t) => t,
                None => dev_token(
                    &settings(&common)?,
                    &tenant,
                    &["admin"],
                    "demo-seeder",
                    // Long enough for the largest demo the options allow (days × per_day
                    // responses at a few tens of thousands a second), with an hour to spare.
                    Duration::from_secs(3600 + u64::from(days) * u64::from(per_day) / 10_000),
                )?,
            };
            cxloop::demo::run(cxloop::demo::DemoOptions {
                addr: addr.clone(),
                token: token.clone(),
                days,
                per_day,
            })
            .await?;
            // Employees answer with their own tokens, which only the dev secret can make.
            let s = settings(&common)?;
            let mint =
                |ext: &str| dev_token(&s, &tenant, &["employee"], ext, Duration::from_secs(3600));
            let mint: Option<cxloop::demo_ex::MintEmployeeToken<'_>> =
                if given { None } else { Some(&mint) };
            cxloop::demo_ex::run(&addr, &token, mint).await
        }
    }
}

/// glibc malloc settings for a long-running server, as (variable, value): at most eight arenas
/// (glibc's default is eight per core), and every allocation of 1 MiB or more mapped on its
/// own, so that it goes back to the system when freed.
///
/// A bulk import allocates and frees megabytes per message (the decoded items, the rows, the
/// answer); glibc by default raises its mapping threshold after such frees, up to 32 MiB, so
/// later ones come from the heap and stay resident in its holes. Measured on 2 cores after
/// importing 9.8 million responses: two arenas alone 160-229 MiB across runs; two arenas with
/// the fixed threshold 116 MiB at 54,000 rows/s; eight with it 141 MiB at 70,000 rows/s
/// (docs/operations.md).
const MALLOC_SETTINGS: [(&str, &str); 2] = [
    ("MALLOC_ARENA_MAX", "8"),
    ("MALLOC_MMAP_THRESHOLD_", "1048576"),
];

/// Starts `cxloop serve` again in this process with [`MALLOC_SETTINGS`] set, when none of
/// them is set yet: glibc reads them once, before `main`, so they cannot be changed later.
/// Setting any of them yourself keeps your values and skips this. `exec` keeps the process id.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc(cli: &Cli) {
    use std::os::unix::process::CommandExt;
    if !matches!(cli.command, Command::Serve { .. })
        || MALLOC_SETTINGS
            .iter()
            .any(|(k, _)| std::env::var_os(k).is_some())
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(MALLOC_SETTINGS)
        .exec();
    // Only reached when exec failed: serve as we are.
    eprintln!("cxloop: serving with glibc's default malloc settings ({err})");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc(_cli: &Cli) {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tune_malloc(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cxloop: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cxloop: {e}");
            ExitCode::FAILURE
        }
    }
}
