//! What a `sync` tells the user at the end, and writes to `STEM.summary.json`: the same on one
//! machine and on the shared journal (`sync --journal`, `job export`), with the same exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cardsync_job::Summary;
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::error::{CliError, Exit};
use crate::report::Reporter;

/// What `sync` tells the user at the end, and writes to `<stem>.summary.json`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct SyncSummary {
    pub(crate) done: bool,
    rows: u64,
    invalid_rows: u64,
    requests: usize,
    batches: usize,
    subscriptions: usize,
    results: u64,
    statuses: Vec<StatusCount>,
    pub(crate) unconfirmed: Vec<u64>,
    /// What each unconfirmed request holds, to look it up at CardSync.
    unconfirmed_requests: Vec<UnconfirmedRequest>,
    failed: Vec<(u64, String)>,
    results_file: Option<String>,
    changes_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// A request whose POST was interrupted, described so that it can be looked up: how many
/// cards it holds and the merchant's ids of its first and last card (masked, see
/// [`crate::show`]).
#[derive(Debug, Serialize)]
pub(crate) struct UnconfirmedRequest {
    pub(crate) request: u64,
    pub(crate) cards: usize,
    pub(crate) first_id: Option<String>,
    pub(crate) last_id: Option<String>,
}

/// How many results have one status.
#[derive(Debug, Serialize)]
struct StatusCount {
    status: String,
    cards: u64,
    meaning: &'static str,
}

/// What a status means for the billing system.
fn meaning(status: &str) -> &'static str {
    match status {
        "updated_card" => "new card number: replace the stored card",
        "updated_expiry" => "new expiry date: update the stored expiry",
        "closed" => "account closed: stop billing, ask for a new card",
        "contact" | "contact_closed" => "contact the cardholder",
        "no_match" | "unknown" => "no update from the issuer",
        "valid" | "no_change" => "card is current",
        "no_result" => "no news: CardSync returns only cards with an update",
        "subscribed" => "American Express: subscribed, updates come by webhook",
        "batch_error" => "the batch failed: these cards have no results",
        _ => "",
    }
}

impl SyncSummary {
    /// The summary of `summary`, with the results files (`files`: the results file and the
    /// changes file, named once done) and what each unconfirmed request holds.
    pub(crate) fn new(
        summary: Summary,
        files: &(PathBuf, PathBuf),
        unconfirmed_requests: Vec<UnconfirmedRequest>,
    ) -> SyncSummary {
        let done = summary.done;
        SyncSummary {
            unconfirmed_requests,
            done,
            rows: summary.rows,
            invalid_rows: summary.invalid_rows,
            requests: summary.requests,
            batches: summary.batches,
            subscriptions: summary.subscriptions,
            results: summary.results,
            statuses: summary
                .statuses
                .into_iter()
                .map(|s| StatusCount {
                    meaning: meaning(&s.status),
                    // A status word is CardSync's: kept as it came, so shown as any outside text.
                    status: crate::show::json(&s.status).into_owned(),
                    cards: s.cards,
                })
                .collect(),
            unconfirmed: summary.unconfirmed,
            // Messages: what CardSync said in them is masked already (`cardsync_proto`).
            failed: summary.failed,
            results_file: done.then(|| files.0.display().to_string()),
            changes_file: done.then(|| files.1.display().to_string()),
            error: summary.error,
        }
    }
}

pub(crate) fn summary_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "results".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.summary.json"))
}

pub(crate) fn exit_for(summary: &SyncSummary) -> ExitCode {
    if !summary.unconfirmed.is_empty() || !summary.done {
        Exit::Remote
    } else if summary.invalid_rows > 0 || !summary.failed.is_empty() {
        Exit::Problems
    } else {
        Exit::Ok
    }
    .into()
}

pub(crate) fn print_summary<W: Write>(
    reporter: &mut Reporter<W>,
    summary: &SyncSummary,
) -> Result<(), CliError> {
    match reporter.format() {
        OutputFormat::Json => reporter.json_line(&serde_json::json!({ "sync": summary }))?,
        OutputFormat::Text => {
            let out = reporter.out();
            writeln!(
                out,
                "\n{} rows: {} invalid; {} requests (batches: {}, subscriptions: {})",
                summary.rows,
                summary.invalid_rows,
                summary.requests,
                summary.batches,
                summary.subscriptions
            )?;
            if !summary.statuses.is_empty() {
                writeln!(out, "\n{:<16} {:>9}  MEANING", "STATUS", "CARDS")?;
                for s in &summary.statuses {
                    let status = crate::show::text(&s.status);
                    writeln!(out, "{status:<16} {:>9}  {}", s.cards, s.meaning)?;
                }
            }
            if let (Some(results), Some(changes)) = (&summary.results_file, &summary.changes_file) {
                writeln!(
                    out,
                    "\nresults: {results} (mode 0600: it holds full card numbers; keep it safe \
                     and delete it once applied)"
                )?;
                writeln!(out, "what changed, per id: {changes}")?;
            }
            // One paragraph for every request that waits for a decision, each named with the
            // ids to look it up by.
            if !summary.unconfirmed_requests.is_empty() {
                let n = summary.unconfirmed_requests.len();
                writeln!(
                    out,
                    "\n{} being sent when a run stopped: CardSync may have created {}, and a \
                     batch sent twice is billed twice.",
                    if n == 1 {
                        "1 request was".to_owned()
                    } else {
                        format!("{n} requests were")
                    },
                    if n == 1 { "it" } else { "them" }
                )?;
                for r in &summary.unconfirmed_requests {
                    let ids = match (
                        r.first_id.as_deref().map(crate::show::text),
                        r.last_id.as_deref().map(crate::show::text),
                    ) {
                        (Some(first), Some(last)) if first != last => {
                            format!(": {} cards, ids {first} to {last}", r.cards)
                        }
                        (Some(first), _) => format!(": {} card, id {first}", r.cards),
                        _ => String::new(),
                    };
                    writeln!(out, "  request {}{ids}", r.request)?;
                }
                let example = summary.unconfirmed_requests[0].request;
                writeln!(
                    out,
                    "Find out whether each arrived (in the CardSync dashboard, a batch holding \
                     its first card's id; or a batch-available webhook for a batch id this job \
                     does not know), then run the same command with:\n  \
                     --adopt {example}=BATCH_ID     for each that arrived, as batch BATCH_ID \
                     (checked with CardSync first)\n  \
                     --resend-unconfirmed   to send the others again\n  \
                     --abandon-unconfirmed  to leave the others' cards out of this job"
                )?;
            }
            for (seq, message) in &summary.failed {
                writeln!(
                    out,
                    "\nrequest {seq} failed, and its cards have no results: {}",
                    crate::show::plain(message)
                )?;
            }
            if summary.statuses.iter().any(|s| s.status == "subscribed") {
                writeln!(
                    out,
                    "\nAmerican Express cards are subscribed: their updates arrive as webhooks. \
                     Run `cardsync listen` (or sync with --wait webhook) to collect them."
                )?;
            }
        }
    }
    reporter.flush()?;
    Ok(())
}
