//! `cardsync sandbox`: the local emulator, until Ctrl-C. On an address other machines reach
//! it needs the host names it is reached at and keys of the user's own, and warns.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use cardsync_proto::paths;
use cardsync_sandbox::{Faults, Sandbox, Settings};

use crate::cli::OutputFormat;
use crate::duration::parse_duration;
use crate::error::CliError;

/// Options of `cardsync sandbox`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on; port 0 picks a free port. On an address that is not loopback
    /// (0.0.0.0 in a container, say) other machines reach it: --allow-host, and keys and an
    /// issuer token of your own, are then needed, and the control endpoints and the dashboard
    /// need the printed token.
    #[arg(long, default_value = "127.0.0.1:8787")]
    addr: SocketAddr,
    /// A host name (or address) the sandbox may be reached at besides 127.0.0.1, ::1 and
    /// localhost; repeat for more. Requests addressed to any other name are refused (403), so
    /// that another site's page cannot use it through DNS rebinding. Needed on an --addr that
    /// is not loopback.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// A host webhooks may be delivered to besides loopback addresses and localhost; repeat
    /// for more. Webhooks registered for any other host are not sent (their delivery fails,
    /// saying why).
    #[arg(long = "webhook-host", value_name = "NAME")]
    webhook_hosts: Vec<String>,
    /// How long batches, enrollments and American Express updates take, such as 2s, 500ms, 0.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    complete_after: Duration,
    /// Answer with the documents' other spellings (msg, contact_closed, string trigger_id,
    /// repeated keys in webhook stats).
    #[arg(long)]
    quirks: bool,
    /// Return a no_change result for every card that is not a documented test card (CardSync
    /// returns only cards with news; this is for load tests that need full result bodies).
    #[arg(long)]
    report_unchanged: bool,
    /// The partner master key.
    #[arg(long, value_name = "KEY", default_value = "sandbox_master_key")]
    master_key: String,
    /// The key of the pre-enrolled merchant.
    #[arg(long, value_name = "KEY", default_value = "sandbox_merchant_key")]
    merchant_key: String,
    /// The bearer token of the issuer side (the issuing platform under /v1, the issuer feed).
    #[arg(long, value_name = "TOKEN", default_value = "sandbox_issuer_token")]
    issuer_token: String,
    /// Answer every API request this much later, such as 100ms, as a distant server would
    /// (the same as the `latency_ms` fault; the control endpoints answer at once).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    latency: Duration,
}

pub(crate) fn run(
    args: Args,
    format: OutputFormat,
    mut out: impl Write,
) -> Result<ExitCode, CliError> {
    for key in [&args.master_key, &args.merchant_key, &args.issuer_token] {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CliError::Usage(
                "keys and the issuer token must be non-empty visible ASCII".to_owned(),
            ));
        }
    }
    for host in args.allow_hosts.iter().chain(&args.webhook_hosts) {
        let plain = host.parse::<std::net::IpAddr>().is_ok()
            || host
                .parse::<http::uri::Authority>()
                .is_ok_and(|a| a.port().is_none() && !host.contains('@') && !host.is_empty());
        if !plain {
            return Err(CliError::Usage(format!(
                "{host:?} is not a host name or address (give no scheme, port or path)"
            )));
        }
    }
    if args.master_key == args.merchant_key {
        return Err(CliError::Usage(
            "the master key and the merchant key must differ".to_owned(),
        ));
    }
    let mut settings = Settings::default();
    settings.complete_after = args.complete_after;
    settings.quirks = args.quirks;
    settings.report_unchanged = args.report_unchanged;
    settings.master_key = args.master_key;
    settings.merchant_key = args.merchant_key;
    settings.issuer_token = args.issuer_token;
    settings.allowed_hosts = args.allow_hosts;
    settings.webhook_hosts = args.webhook_hosts;
    let exposed = !args.addr.ip().to_canonical().is_loopback();
    if exposed {
        if settings.allowed_hosts.is_empty() {
            return Err(CliError::Usage(format!(
                "{} can be reached from other machines: name the hosts the sandbox is reached \
                 at with --allow-host NAME (requests to other names are refused)",
                args.addr
            )));
        }
        let public = settings.public_secrets();
        if !public.is_empty() {
            return Err(CliError::Usage(format!(
                "{} can be reached from other machines, and the sandbox's default keys are \
                 public: give {} of your own",
                args.addr,
                public.join(", ")
            )));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Stdout)?;
    runtime.block_on(async move {
        let sandbox = Sandbox::start(settings, args.addr)
            .await
            .map_err(|source| CliError::Io {
                path: args.addr.to_string().into(),
                source,
            })?;
        if !args.latency.is_zero() {
            let mut faults = Faults::default();
            faults.latency_ms = u64::try_from(args.latency.as_millis()).unwrap_or(u64::MAX);
            sandbox.set_faults(faults);
        }
        let s = sandbox.settings();
        if sandbox.exposed() {
            eprintln!(
                "warning: the sandbox listens on {}, where other machines can reach it; it \
                 answers at {} and loopback names only, its control endpoints and dashboard need \
                 the control token, and its webhooks go only to loopback{}",
                sandbox.addr(),
                s.allowed_hosts.join(", "),
                if s.webhook_hosts.is_empty() {
                    String::new()
                } else {
                    format!(" and {}", s.webhook_hosts.join(", "))
                }
            );
        }
        match format {
            OutputFormat::Json => {
                let line = serde_json::json!({
                    "base_url": sandbox.base_url(),
                    "dashboard_url": sandbox.dashboard_url(),
                    "master_key": s.master_key,
                    "merchant_key": s.merchant_key,
                    "merchant_id": s.merchant_id,
                    "issuer_token": s.issuer_token,
                    "control_token": sandbox.control_token(),
                });
                writeln!(out, "{line}")?;
            }
            OutputFormat::Text => {
                writeln!(out, "CardSync sandbox listening at {}", sandbox.base_url())?;
                writeln!(out, "  dashboard           {}", sandbox.dashboard_url())?;
                if sandbox.exposed() {
                    writeln!(
                        out,
                        "  control token       {} (x-cardsync-sandbox-token or Authorization: Bearer, on /_sandbox/)",
                        sandbox.control_token()
                    )?;
                }
                writeln!(out, "  partner master key  {}", s.master_key)?;
                writeln!(out, "  merchant key        {}", s.merchant_key)?;
                writeln!(out, "  merchant id         {}", s.merchant_id)?;
                writeln!(
                    out,
                    "  issuer token        {} (issuing platform under {}, issuer feed under {})",
                    s.issuer_token,
                    paths::PLATFORM_BASE,
                    paths::FEED_CUSTOMERS
                )?;
                writeln!(
                    out,
                    "  batches complete after {:?}; control endpoints under /_sandbox/",
                    s.complete_after
                )?;
                if !args.latency.is_zero() {
                    writeln!(out, "  every answer delayed by {:?}", args.latency)?;
                }
                writeln!(out, "Press Ctrl-C to stop.")?;
            }
        }
        out.flush()?;
        tokio::signal::ctrl_c().await.map_err(CliError::Runtime)?;
        sandbox.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
