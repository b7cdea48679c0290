//! The commands that make one call each (`submit`, `status`, `results`, `unsubscribe`,
//! `webhooks set`, `merchant`), and `demo`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use cardsync_core::{PlannedRequest, Planner, RouteKind, SANDBOX_TEST_CARDS, UpdateStatus};
use cardsync_proto::{
    CreateBatch, KeyScope, MerchantEnrollment, Results, SetWebhooks, Subscribe, Trigger,
    Unsubscribe,
};
use cardsync_sandbox::{Sandbox, Settings};
use serde_json::json;

use cardsync_job::ResultRow;

use crate::cli::{Global, OutputFormat};
use crate::error::{CliError, Exit, io_err};
use crate::files::{Format, RowFile};
use crate::job::local::{self as sync, RESULT_COLUMNS};
use crate::job::{Args as SyncArgs, Wait};
use crate::pipeline::{check_rows, plan_options, runtime};
use crate::remote::remote_error;
use crate::report::Reporter;
use crate::show;

/// Plans a file and returns its requests, reporting invalid rows. Returns the number of
/// invalid rows too.
fn plan_file<W: Write>(
    file: &Path,
    se_number: Option<&str>,
    global: &Global,
    out: W,
) -> Result<(Vec<PlannedRequest>, u64, W), CliError> {
    let options = plan_options(se_number, None)?;
    let mut reporter =
        Reporter::new(out, global.output).with_rejects(crate::report::rejects_path(file), 5);
    let mut requests = Vec::new();
    check_rows(
        file,
        &mut Planner::new(options),
        &mut reporter,
        crate::pipeline::ShowValid::None,
        |_, request| {
            requests.push(request);
            Ok(())
        },
    )?;
    reporter.rejects_note()?;
    reporter.warnings_note()?;
    let invalid = reporter.summary().invalid;
    Ok((requests, invalid, reporter.into_inner()))
}

/// `cardsync submit`.
pub(crate) fn submit<W: Write>(
    file: &Path,
    se_number: Option<String>,
    global: &Global,
    out: W,
) -> Result<ExitCode, CliError> {
    global.remote.need_api_key()?;
    let client = global.remote.client()?;
    let (requests, invalid, mut out) = plan_file(file, se_number.as_deref(), global, out)?;
    runtime()?.block_on(async {
        for request in requests {
            let seq = request.seq;
            let cards = request.cards.len();
            match request.route.kind() {
                RouteKind::Subscription => {
                    let se = request
                        .route
                        .se_number()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default();
                    let subscribe = Subscribe::from_planned(request)
                        .map_err(|e| CliError::Usage(e.to_string()))?;
                    client
                        .subscribe(&subscribe)
                        .await
                        .map_err(|e| remote_error(&format!("subscription request {seq}"), e))?;
                    match global.output {
                        OutputFormat::Json => writeln!(
                            out,
                            "{}",
                            json!({"request": seq, "route": "subscription", "se_number": se, "cards": cards})
                        )?,
                        OutputFormat::Text => writeln!(
                            out,
                            "request {seq}: {cards} American Express cards subscribed for SE {se}"
                        )?,
                    }
                }
                _ => {
                    let batch = CreateBatch::from_planned(request)
                        .map_err(|e| CliError::Usage(e.to_string()))?;
                    let created = client
                        .create_batch(&batch)
                        .await
                        .map_err(|e| remote_error(&format!("batch request {seq}"), e))?;
                    match global.output {
                        OutputFormat::Json => writeln!(
                            out,
                            "{}",
                            json!({"request": seq, "route": "batch", "batch_id": created.batch_id,
                                   "status": show::json(created.status.as_str()), "cards": cards})
                        )?,
                        OutputFormat::Text => writeln!(
                            out,
                            "request {seq}: batch {} created ({cards} cards, {})",
                            show::plain(&created.batch_id),
                            show::text(created.status.as_str())
                        )?,
                    }
                }
            }
            out.flush()?;
        }
        Ok::<_, CliError>(())
    })?;
    Ok(Exit::for_invalid(invalid).into())
}

/// `cardsync status`.
pub(crate) fn status<W: Write>(
    batch_id: &str,
    global: &Global,
    mut out: W,
) -> Result<ExitCode, CliError> {
    global.remote.need_api_key()?;
    let client = global.remote.client()?;
    let info = runtime()?
        .block_on(client.batch(batch_id))
        .map_err(|e| remote_error(&format!("batch {batch_id}"), e))?;
    let stats = &info.stats.stats;
    match global.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            json!({
                "batch_id": info.batch_id.as_deref().unwrap_or(batch_id),
                "status": show::json(info.status.as_str()),
                "created_at": info.created_at.as_deref().map(show::json),
                "updated_at": info.updated_at.as_deref().map(show::json),
                "stats": stats_rows(stats).into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            })
        )?,
        OutputFormat::Text => {
            writeln!(
                out,
                "batch {}: {}",
                show::plain(batch_id),
                show::text(info.status.as_str())
            )?;
            if let Some(t) = &info.created_at {
                writeln!(out, "  created  {}", show::text(t))?;
            }
            if let Some(t) = &info.updated_at {
                writeln!(out, "  updated  {}", show::text(t))?;
            }
            for (name, n) in stats_rows(stats) {
                if n > 0 {
                    writeln!(out, "  {name:<18} {n}")?;
                }
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn stats_rows(s: &cardsync_core::Stats) -> Vec<(&'static str, u64)> {
    vec![
        ("number_submitted", s.number_submitted),
        ("updated_card", s.updated_card),
        ("updated_expiry", s.updated_expiry),
        ("closed", s.closed),
        ("contact", s.contact),
        ("no_match", s.no_match),
        ("no_change", s.no_change),
        ("valid", s.valid),
        ("other", s.other),
    ]
}

/// Options of `cardsync results`.
#[derive(Debug, clap::Args)]
pub(crate) struct ResultsArgs {
    /// The batch id.
    #[arg(long, value_name = "ID", required_unless_present = "event")]
    batch: Option<String>,
    /// The event id of a webhook (with --batch: of its batch-available webhook; alone: of an
    /// American Express update).
    #[arg(long, value_name = "ID")]
    event: Option<String>,
    /// Write the results, with full card numbers, to this file (CSV, or JSON Lines for
    /// .jsonl; mode 0600). Without it, results are printed with masked numbers.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write over an existing --out file.
    #[arg(long, requires = "out")]
    force: bool,
}

/// `cardsync results`.
pub(crate) fn results<W: Write>(
    args: ResultsArgs,
    global: &Global,
    mut out: W,
) -> Result<ExitCode, CliError> {
    global.remote.need_api_key()?;
    if let Some(path) = &args.out {
        crate::files::check_outputs(None, &[], &[path], false, args.force)?;
    }
    let client = global.remote.client()?;
    let results = runtime()?.block_on(async {
        match (&args.batch, &args.event) {
            (Some(batch), event) => client
                .batch_results(batch, event.as_deref())
                .await
                .map_err(|e| remote_error(&format!("results of batch {batch}"), e)),
            (None, Some(event)) => client
                .subscription_results(event)
                .await
                .map_err(|e| remote_error(&format!("American Express update {event}"), e)),
            (None, None) => Err(CliError::Usage("give --batch or --event".to_owned())),
        }
    })?;
    let batch_id = args.batch.as_deref().or(results.batch_id.as_deref());
    if let Some(path) = &args.out {
        write_results_file(path, &results, batch_id, args.event.as_deref())?;
    }
    print_results(&mut out, global, &results, args.out.is_none())?;
    if let Some(path) = &args.out
        && global.output == OutputFormat::Text
    {
        writeln!(
            out,
            "{} results written to {} (mode 0600: it holds full card numbers)",
            results.cards.len(),
            path.display()
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a results file whole: to a scratch file beside it, made durable, then renamed (and
/// the rename made durable), so that a crash never leaves half a file and writing it again
/// gives the same file.
pub(crate) fn write_results_file(
    path: &Path,
    results: &Results,
    batch_id: Option<&str>,
    event_id: Option<&str>,
) -> Result<(), CliError> {
    let mut scratch = path.as_os_str().to_owned();
    scratch.push(".partial");
    let scratch = PathBuf::from(scratch);
    let mut file =
        RowFile::open(&scratch, Format::of(path), RESULT_COLUMNS, 0).map_err(io_err(&scratch))?;
    for card in &results.cards {
        let mut row = ResultRow::from(card.clone());
        row.batch_id = batch_id.map(str::to_owned);
        row.event_id = event_id.map(str::to_owned);
        file.result(&row).map_err(io_err(&scratch))?;
    }
    file.checkpoint().map_err(io_err(&scratch))?;
    drop(file);
    std::fs::rename(&scratch, path).map_err(io_err(path))?;
    crate::files::sync_parent(path).map_err(io_err(path))?;
    Ok(())
}

/// Prints results with masked card numbers: every card when `rows`, else the counts only.
fn print_results<W: Write>(
    out: &mut W,
    global: &Global,
    results: &Results,
    rows: bool,
) -> Result<(), CliError> {
    // Every text here is CardSync's: the ids are the merchant's as echoed back, the rest free
    // text; all of it is masked (and escaped on the terminal).
    let counts: Vec<(String, u64)> = cardsync_job::status_counts(results)
        .into_iter()
        .map(|(s, n)| (show::json(&s).into_owned(), n))
        .collect();
    for card in results.cards.iter().filter(|_| rows) {
        let status = card.status.as_ref().map_or("(none)", UpdateStatus::as_str);
        let masked = card.card.masked();
        let (exp, se) = (card.exp.as_deref(), card.se_number.as_deref());
        match global.output {
            OutputFormat::Json => writeln!(
                out,
                "{}",
                json!({"id": show::json(&card.id), "status": show::json(status),
                       "card": masked.as_str(), "exp": exp.map(show::json),
                       "se_number": se.map(show::json)})
            )?,
            OutputFormat::Text => writeln!(
                out,
                "{:<20} {:<16} {:<20} {:<7} {}",
                show::text(&card.id),
                show::text(status),
                masked,
                show::text(exp.unwrap_or("")),
                show::text(se.unwrap_or(""))
            )?,
        }
    }
    match global.output {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            json!({"status": show::json(results.status.as_str()), "results": results.cards.len(),
                   "by_status": counts})
        )?,
        OutputFormat::Text => {
            let by: Vec<String> = counts
                .iter()
                .map(|(s, n)| format!("{} {n}", show::text(s)))
                .collect();
            writeln!(
                out,
                "{} results ({}): {}",
                results.cards.len(),
                show::text(results.status.as_str()),
                by.join(", ")
            )?;
        }
    }
    Ok(())
}

/// `cardsync unsubscribe`.
pub(crate) fn unsubscribe<W: Write>(
    file: &Path,
    se_number: &str,
    global: &Global,
    out: W,
) -> Result<ExitCode, CliError> {
    global.remote.need_api_key()?;
    let client = global.remote.client()?;
    let (requests, invalid, mut out) = plan_file(file, Some(se_number), global, out)?;
    let mut not_amex = 0;
    runtime()?.block_on(async {
        for request in requests {
            if request.route.kind() != RouteKind::Subscription {
                not_amex += request.cards.len();
                continue;
            }
            let seq = request.seq;
            let cards = request.cards.len();
            let se = request
                .route
                .se_number()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            let body =
                Unsubscribe::from_planned(request).map_err(|e| CliError::Usage(e.to_string()))?;
            client
                .unsubscribe(&body)
                .await
                .map_err(|e| remote_error(&format!("unsubscribe request {seq}"), e))?;
            match global.output {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    json!({"request": seq, "se_number": se, "unsubscribed": cards})
                )?,
                OutputFormat::Text => writeln!(out, "{cards} cards unsubscribed from SE {se}")?,
            }
        }
        Ok::<_, CliError>(())
    })?;
    if not_amex > 0 {
        eprintln!(
            "{not_amex} cards are not American Express: only American Express cards have \
             subscriptions; they were left alone"
        );
    }
    out.flush()?;
    Ok(Exit::for_invalid(invalid + not_amex as u64).into())
}

/// `cardsync webhooks`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum WebhooksCommand {
    /// Register the URLs CardSync calls for each event (the merchant key, or the partner key
    /// with --partner). URLs not given are left as they are.
    Set {
        /// Trigger 20: a batch's results are ready.
        #[arg(long, value_name = "URL")]
        batch_available: Option<String>,
        /// Trigger 21: a merchant enrollment is complete.
        #[arg(long, value_name = "URL")]
        enrollment_complete: Option<String>,
        /// Trigger 22: a batch failed.
        #[arg(long, value_name = "URL")]
        batch_error: Option<String>,
        /// Trigger 23: American Express updates.
        #[arg(long, value_name = "URL")]
        amex_update: Option<String>,
        /// Register for the partner (every merchant without its own), with the partner key.
        #[arg(long)]
        partner: bool,
    },
}

/// The `webhooks set` option of a trigger.
fn trigger_flag(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::BatchAvailable => "batch-available",
        Trigger::EnrollmentComplete => "enrollment-complete",
        Trigger::BatchError => "batch-error",
        _ => "amex-update",
    }
}

/// `cardsync webhooks set`.
pub(crate) fn webhooks<W: Write>(
    command: WebhooksCommand,
    global: &Global,
    mut out: W,
) -> Result<ExitCode, CliError> {
    let WebhooksCommand::Set {
        batch_available,
        enrollment_complete,
        batch_error,
        amex_update,
        partner,
    } = command;
    if partner {
        global.remote.need_partner_key()?;
    } else {
        global.remote.need_api_key()?;
    }
    let mut request = SetWebhooks::new();
    let mut set = Vec::new();
    for (trigger, url) in [
        (Trigger::BatchAvailable, batch_available),
        (Trigger::EnrollmentComplete, enrollment_complete),
        (Trigger::BatchError, batch_error),
        (Trigger::AmexUpdate, amex_update),
    ] {
        if let Some(url) = url {
            cardsync_proto::webhook_url::check(&url).map_err(|e| {
                CliError::Usage(format!(
                    "--{} {}: {e}",
                    trigger_flag(trigger),
                    cardsync_proto::webhook_url::display(&url)
                ))
            })?;
            set.push((trigger, url.clone()));
            request = request.with(trigger, url);
        }
    }
    if set.is_empty() {
        return Err(CliError::Usage(
            "give at least one of --batch-available, --enrollment-complete, --batch-error, \
             --amex-update"
                .to_owned(),
        ));
    }
    if partner {
        request = request.signed_by(KeyScope::Partner);
    }
    let client = global.remote.client()?;
    runtime()?
        .block_on(client.set_webhooks(&request))
        .map_err(|e| remote_error("setting webhooks", e))?;
    // The URLs are shown without their secret paths: whoever knows one can post events.
    for (trigger, url) in set {
        let shown = cardsync_proto::webhook_url::display(&url);
        match global.output {
            OutputFormat::Json => writeln!(
                out,
                "{}",
                json!({"trigger_id": trigger.id(), "url": shown, "set": true})
            )?,
            OutputFormat::Text => writeln!(out, "{trigger}: {shown}")?,
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `cardsync merchant`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum MerchantCommand {
    /// Enroll a merchant from a JSON file in the documented enrollment format.
    Enroll {
        /// The enrollment, as JSON.
        file: PathBuf,
    },
    /// Show a merchant's enrollment status.
    Status {
        /// The merchant id.
        merchant_id: String,
    },
}

/// `cardsync merchant enroll|status`.
pub(crate) fn merchant<W: Write>(
    command: MerchantCommand,
    global: &Global,
    mut out: W,
) -> Result<ExitCode, CliError> {
    global.remote.need_partner_key()?;
    let client = global.remote.client()?;
    match command {
        MerchantCommand::Enroll { file } => {
            let text = std::fs::read(&file).map_err(io_err(&file))?;
            let enrollment: MerchantEnrollment =
                serde_json::from_slice(&text).map_err(|e| CliError::Input {
                    path: file.clone(),
                    message: format!("not a merchant enrollment: {}", show::json(&e.to_string())),
                })?;
            let enrolled = runtime()?
                .block_on(client.enroll_merchant(&cardsync_proto::EnrollMerchant::new(enrollment)))
                .map_err(|e| remote_error("enrolling the merchant", e))?;
            let key = enrolled.api_key.expose_secret();
            match global.output {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    json!({"merchant_id": enrolled.merchant_id, "api_key": key,
                           "created_at": enrolled.created_at.as_deref().map(show::json)})
                )?,
                OutputFormat::Text => {
                    writeln!(
                        out,
                        "merchant {} enrolled",
                        show::plain(&enrolled.merchant_id)
                    )?;
                    writeln!(
                        out,
                        "api key: {}\n(store it in your secret store now; it is not shown again)",
                        show::plain(key)
                    )?;
                }
            }
        }
        MerchantCommand::Status { merchant_id } => {
            let status = runtime()?
                .block_on(client.merchant(&merchant_id))
                .map_err(|e| remote_error(&format!("merchant {merchant_id}"), e))?;
            match global.output {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    json!({"merchant_id": status.merchant_id.as_deref().unwrap_or(&merchant_id),
                           "enrollment": status.enrollment.as_deref().map(show::json),
                           "status": status.status.as_deref().map(show::json),
                           "message": status.message.as_deref().map(show::json)})
                )?,
                OutputFormat::Text => writeln!(
                    out,
                    "merchant {}: {}",
                    show::plain(&merchant_id),
                    show::text(
                        status
                            .enrollment
                            .as_deref()
                            .or(status.message.as_deref())
                            .unwrap_or("(no status given)")
                    )
                )?,
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Options of `cardsync demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Where to write the demo's card file, results and journal [default: a new temporary
    /// directory].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The SE number the demo gives its American Express cards.
const DEMO_SE_NUMBER: &str = "9876543210";

/// `cardsync demo`.
pub(crate) fn demo(args: DemoArgs, global: &Global) -> Result<ExitCode, CliError> {
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("cardsync-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let cards = dir.join("cards.csv");
    let out = dir.join("results.csv");
    for stale in [
        out.clone(),
        dir.join("results.csv.journal"),
        dir.join("results.csv.partial"),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    let mut csv = String::from("id,card,exp,se_number\n");
    for (i, card) in SANDBOX_TEST_CARDS.iter().enumerate() {
        let (exp, se) = match card.exp {
            Some(e) => (e, ""),
            None => ("12/30", DEMO_SE_NUMBER),
        };
        csv.push_str(&format!("demo-{:03},{},{exp},{se}\n", i + 1, card.card));
    }
    std::fs::write(&cards, csv).map_err(io_err(&cards))?;

    runtime()?.block_on(async {
        let mut settings = Settings::default();
        settings.complete_after = Duration::from_millis(300);
        let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse().expect("address"))
            .await
            .map_err(io_err(Path::new("127.0.0.1:0")))?;
        let key = sandbox.settings().merchant_key.clone();
        let base = sandbox.base_url().to_owned();
        if !global.quiet && global.output == OutputFormat::Text {
            println!(
                "CardSync emulator started at {base}; syncing {} documented test cards from {}",
                SANDBOX_TEST_CARDS.len(),
                cards.display()
            );
        }
        let mut global = global.clone();
        global.remote.base_url = base;
        global.remote.api_key = Some(key);
        global.remote.partner_key = None;
        let mut sync_args = SyncArgs::new(cards.clone(), out.clone());
        // The demo's own folder, emptied of its last run's files above.
        sync_args.force = true;
        sync_args.wait = Wait::Webhook;
        // The demo's own emulator: its merchant has no receiver of its own to replace.
        sync_args.register_webhooks = true;
        sync_args.own_emulator = true;
        sync_args.amex_wait = Duration::from_secs(20);
        sync_args.poll_max = Duration::from_secs(1);
        let code = sync::run_async(&sync_args, &global).await;
        let code = match code {
            Ok(code) => code,
            Err(e) => {
                sandbox.shutdown().await;
                return Err(e);
            }
        };
        if global.output == OutputFormat::Text {
            print_demo_cards(&out)?;
        }
        // Then the issuers: a merchant's Visa card is reported lost, an American Express card
        // is closed; the merchant's next sync receives both.
        let story = issuer_story(&sandbox, &dir, &global).await;
        sandbox.shutdown().await;
        let second = story?;
        Ok(if code == ExitCode::SUCCESS {
            second
        } else {
            code
        })
    })
}

/// A card of the merchant's that its issuer reports lost.
const DEMO_LOST_CARD: &str = "4111111111111111";
/// An American Express card of the merchant's that its issuer closes.
const DEMO_CLOSED_AMEX: &str = "371449635398431";

/// The second act of the demo: the issuers change two cards through the emulator's issuing
/// platform (the documented `PATCH /v1/cards/{card_id}`), and the merchant's next `sync`
/// receives the reissued number and, by webhook, the closed American Express account.
async fn issuer_story(
    sandbox: &Sandbox,
    dir: &Path,
    global: &Global,
) -> Result<ExitCode, CliError> {
    use cardsync_proto::issuer::platform::{
        CardEdits, IdempotencyKey, PlatformCardStatus, StatusReason, UpdateCard,
    };
    use cardsync_proto::issuer::{IssuerConfig, IssuerEndpoint};
    let text = !global.quiet && global.output == OutputFormat::Text;
    let exp = cardsync_core::Expiry::parse("05/27").expect("a valid expiry");
    let platform = cardsync_proto::BaseUrl::parse(&format!(
        "{}{}",
        sandbox.base_url(),
        cardsync_proto::paths::PLATFORM_BASE
    ))
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let token = cardsync_proto::IssuerToken::new(&sandbox.settings().issuer_token)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let config = IssuerConfig::new(platform).with_token(token);
    let transport = cardsync_hyper::HyperTransport::new(cardsync_hyper::Options::loopback())
        .map_err(|e| CliError::Usage(format!("cannot set up the transport: {e}")))?;
    if text {
        println!("\nNext, the issuers:");
    }
    for (card, reason, what) in [
        (DEMO_LOST_CARD, StatusReason::Lost, "reports it lost"),
        (DEMO_CLOSED_AMEX, StatusReason::Other, "closes the account"),
    ] {
        let pan = cardsync_core::Pan::parse(card).expect("a valid card number");
        let card_id = sandbox.register_issuer_card(&pan, exp);
        let key = cardsync_hyper::random_token()
            .ok()
            .and_then(|k| IdempotencyKey::new(&k))
            .ok_or_else(|| CliError::Usage("the system's random generator failed".into()))?;
        let patch = UpdateCard::new(
            card_id.clone(),
            CardEdits::status(PlatformCardStatus::Terminated, reason.clone()),
            key,
        )
        .map_err(|e| CliError::Usage(e.to_string()))?;
        let request = patch
            .encode(&config)
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let answer = crate::issuer::send(&transport, request, UpdateCard::IDEMPOTENCY).await?;
        let issued = UpdateCard::decode(&answer)
            .map_err(|e| crate::issuer::remote_error(&format!("card {card_id}"), e))?;
        if text {
            println!(
                "  the issuer of {} {what}: PATCH {}{card_id} TERMINATED ({}: {}){}",
                pan.masked(),
                cardsync_proto::paths::PLATFORM_CARD_AT_ROOT,
                reason.as_str(),
                reason.description(),
                issued
                    .card_details
                    .reissued_to_id
                    .map(|to| format!("; reissued as card {to}"))
                    .unwrap_or_default()
            );
        }
    }
    let cards = dir.join("cards-2.csv");
    let out = dir.join("results-2.csv");
    for stale in [
        out.clone(),
        dir.join("results-2.csv.journal"),
        dir.join("results-2.csv.partial"),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    let csv = format!(
        "id,card,exp,se_number\nmerchant-visa,{DEMO_LOST_CARD},05/27,\nmerchant-amex,{DEMO_CLOSED_AMEX},05/27,{DEMO_SE_NUMBER}\n"
    );
    std::fs::write(&cards, csv).map_err(io_err(&cards))?;
    if text {
        println!("\nThe merchant's next sync ({}):", cards.display());
    }
    let mut sync_args = SyncArgs::new(cards, out.clone());
    // The demo's own folder, emptied of its last run's files above.
    sync_args.force = true;
    sync_args.wait = Wait::Webhook;
    sync_args.register_webhooks = true;
    sync_args.own_emulator = true;
    sync_args.amex_wait = Duration::from_secs(20);
    sync_args.poll_max = Duration::from_secs(1);
    let code = sync::run_async(&sync_args, global).await?;
    if global.output == OutputFormat::Text {
        print_demo_cards(&out)?;
        if !global.quiet {
            println!(
                "\nThe Visa card came back reissued in the batch results; the American Express \
                 card's closing came by the update webhook (trigger 23) and its subscription results."
            );
        }
    }
    Ok(code)
}

/// The demo's per-card table, read back from its results file, with masked numbers.
fn print_demo_cards(results: &Path) -> Result<(), CliError> {
    let mut reader = csv::Reader::from_path(results).map_err(|e| CliError::Input {
        path: results.to_owned(),
        message: e.to_string(),
    })?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        "\n{:<14} {:<20} {:<16} {:<7} ROUTE",
        "ID", "CARD RETURNED", "STATUS", "EXP"
    )?;
    let mut rows: Vec<csv::StringRecord> = reader.records().filter_map(Result::ok).collect();
    rows.sort_by(|a, b| a.get(0).cmp(&b.get(0)));
    for row in rows {
        let card = cardsync_core::mask_card_text(row.get(2).unwrap_or(""));
        let route = if row.get(4).unwrap_or("").is_empty() {
            "batch"
        } else {
            "subscription"
        };
        writeln!(
            out,
            "{:<14} {:<20} {:<16} {:<7} {route}",
            show::text(row.get(0).unwrap_or("")),
            card.as_str(),
            show::text(row.get(1).unwrap_or("")),
            show::text(row.get(3).unwrap_or("")),
        )?;
    }
    out.flush()?;
    Ok(())
}
