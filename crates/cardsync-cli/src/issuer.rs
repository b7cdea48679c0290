//! `cardsync issuer`: the issuer side of the card network, against the local emulator (or an
//! issuing platform and issuer feed speaking the documents' APIs): register a card with the
//! platform, change a card's status, send an issuer feed file. Card numbers are masked on the
//! terminal, as everywhere.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cardsync_core::{Expiry, Pan, mask_card_text};
use cardsync_hyper::HyperTransport;
use cardsync_proto::issuer::feed::{FeedCard, UpdateCards, decode_update_cards_body};
use cardsync_proto::issuer::platform::{
    CardEdits, IdempotencyKey, IssuedCard, PlatformCardStatus, StatusReason, UpdateCard,
};
use cardsync_proto::issuer::{IssuerConfig, IssuerEndpoint};
use cardsync_proto::retry::{Decision, Outcome, RetryPolicy};
use cardsync_proto::transport::Transport;
use cardsync_proto::{BaseUrl, Idempotency, IssuerToken, paths};
use serde_json::{Value, json};

use crate::cli::{Global, OutputFormat};
use crate::error::{CliError, io_err};
use crate::pipeline::runtime;

/// Where the issuer side is, and its token.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct IssuerRemote {
    /// The issuer side's server: the issuing platform answers under URL/v1 (as
    /// `https://api.synctera.com/v1`) and the issuer feed under URL/v2/data. Defaults to the
    /// CardSync base URL, which is right for the local emulator.
    #[arg(long, env = "CARDSYNC_ISSUER_BASE_URL", value_name = "URL")]
    issuer_base_url: Option<String>,
    /// The issuer side's bearer token (the local emulator's is sandbox_issuer_token).
    #[arg(
        long,
        env = "CARDSYNC_ISSUER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    issuer_token: Option<String>,
}

/// `cardsync issuer …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum IssuerCommand {
    /// Cards of the issuing platform.
    #[command(subcommand)]
    Cards(CardsCommand),
    /// Change a card's status at the issuing platform (PATCH /v1/cards/CARD_ID), with an
    /// idempotency key kept across retries.
    ///
    /// TERMINATED with LOS, STO, CLO, COM or FRD reissues the card (merchants get the new
    /// number), with EXP renews it (a new expiry), with any other reason closes it; SUSPENDED
    /// and back to ACTIVE tell merchants nothing.
    CardStatus {
        /// The platform's card id.
        card_id: String,
        #[command(flatten)]
        remote: IssuerRemote,
        /// ACTIVE, SUSPENDED or TERMINATED.
        #[arg(long)]
        status: String,
        /// The reason code, such as LOS (lost), STO (stolen), EXP (expired), CLO (cloned).
        #[arg(long)]
        reason: Option<String>,
        /// Details about the change, at most 255 characters.
        #[arg(long)]
        memo: Option<String>,
    },
    /// Send an issuer feed file (PUT /v2/data/customers/ID/accounts/ID/cards).
    ///
    /// FILE is JSON in the document's shape, {"cards": [...]}; sourceCustomerId and
    /// sourceAccountId may be left out of the cards (they are taken from --customer and
    /// --account).
    UpdateCards {
        /// The feed file.
        file: PathBuf,
        /// The customer (sourceCustomerId).
        #[arg(long)]
        customer: String,
        /// The account (sourceAccountId).
        #[arg(long)]
        account: String,
        #[command(flatten)]
        remote: IssuerRemote,
    },
}

/// `cardsync issuer cards …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CardsCommand {
    /// Register a card with the local emulator's issuing platform; prints its card id.
    Add {
        /// The card number, or `-` to read it from standard input (keeps it out of the
        /// process list and the shell's history).
        #[arg(long)]
        card: String,
        /// The expiry date, MM/YY.
        #[arg(long)]
        exp: String,
        #[command(flatten)]
        remote: IssuerRemote,
    },
}

/// The server root, the token, and a transport for it.
fn connect(
    remote: &IssuerRemote,
    global: &Global,
) -> Result<(BaseUrl, Option<IssuerToken>, HyperTransport), CliError> {
    let url = remote
        .issuer_base_url
        .clone()
        .unwrap_or_else(|| global.remote.base_url.clone());
    let base = BaseUrl::parse(&url)
        .map_err(|e| CliError::Usage(format!("--issuer-base-url {url:?}: {e}")))?;
    let token = remote
        .issuer_token
        .as_deref()
        .map(IssuerToken::new)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--issuer-token: {e}")))?;
    let transport = crate::remote::transport_for(&base)?;
    Ok((base, token, transport))
}

fn need_token(token: Option<IssuerToken>) -> Result<IssuerToken, CliError> {
    token.ok_or_else(|| {
        CliError::Usage("no issuer token: set CARDSYNC_ISSUER_TOKEN or pass --issuer-token".into())
    })
}

pub(crate) fn remote_error(
    what: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> CliError {
    CliError::Remote {
        what: what.to_owned(),
        hint: "",
        source: Box::new(e),
    }
}

/// Sends `request`, again as the retry policy says for a request of this idempotency (the
/// request, idempotency key included, is the same every time).
pub(crate) async fn send(
    transport: &HyperTransport,
    request: http::Request<Vec<u8>>,
    idempotency: Idempotency,
) -> Result<http::Response<Vec<u8>>, CliError> {
    let policy = RetryPolicy::default();
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        let mut copy = http::Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        let outcome = match transport.send(copy).await {
            Ok(answer) if answer.status().is_success() || answer.status().is_client_error() => {
                return Ok(answer);
            }
            Ok(answer) => {
                let status = answer.status();
                match policy.decide(
                    idempotency,
                    attempt,
                    started.elapsed(),
                    Outcome::Response {
                        status,
                        retry_after: None,
                    },
                    0.5,
                ) {
                    Decision::Retry { after } => after,
                    _ => return Ok(answer),
                }
            }
            Err(e) => match policy.decide(
                idempotency,
                attempt,
                started.elapsed(),
                Outcome::Transport {
                    reached: e.reached(),
                },
                0.5,
            ) {
                Decision::Retry { after } => after,
                _ => {
                    return Err(remote_error(
                        &format!("{} {}", request.method(), request.uri()),
                        e,
                    ));
                }
            },
        };
        tokio::time::sleep(outcome.min(Duration::from_secs(30))).await;
        attempt += 1;
    }
}

/// `cardsync issuer …`.
pub(crate) fn run<W: Write>(
    command: IssuerCommand,
    global: &Global,
    mut out: W,
) -> Result<ExitCode, CliError> {
    match command {
        IssuerCommand::Cards(CardsCommand::Add { card, exp, remote }) => {
            let card = if card == "-" {
                read_card_from_stdin()?
            } else {
                zeroize::Zeroizing::new(card)
            };
            let pan = Pan::parse(&card)
                .map_err(|e| CliError::Usage(format!("--card {}: {e}", mask_card_text(&card))))?;
            let exp = Expiry::parse(&exp).map_err(|e| CliError::Usage(format!("--exp: {e}")))?;
            let (base, _, transport) = connect(&remote, global)?;
            let body = json!({"card": pan.expose().as_str(), "exp": exp.to_string()});
            let request = http::Request::post(
                base.join("/_sandbox/issuer/cards", "")
                    .map_err(|e| CliError::Usage(e.to_string()))?,
            )
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap_or_default())
            .map_err(|e| CliError::Usage(e.to_string()))?;
            let answer =
                runtime()?.block_on(send(&transport, request, Idempotency::NotIdempotent))?;
            let value: Value = serde_json::from_slice(answer.body()).unwrap_or(Value::Null);
            let Some(card_id) = value["card_id"]
                .as_str()
                .filter(|_| answer.status().is_success())
            else {
                return Err(CliError::Usage(format!(
                    "the emulator refused the card ({}); `issuer cards add` works against the \
                     local emulator (`cardsync sandbox`)",
                    answer.status()
                )));
            };
            match global.output {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    json!({"card_id": card_id, "card": pan.masked().as_str(), "exp": exp.to_string()})
                )?,
                OutputFormat::Text => writeln!(
                    out,
                    "card {} ({}, {exp}) registered as {}",
                    pan.masked(),
                    pan.brand(),
                    crate::show::plain(card_id)
                )?,
            }
        }
        IssuerCommand::CardStatus {
            card_id,
            remote,
            status,
            reason,
            memo,
        } => {
            let (base, token, transport) = connect(&remote, global)?;
            let status = PlatformCardStatus::parse(&status.to_ascii_uppercase());
            if !status.is_known() {
                return Err(CliError::Usage(
                    "--status must be ACTIVE, SUSPENDED or TERMINATED".into(),
                ));
            }
            let reason = reason.map(|r| StatusReason::parse(&r.to_ascii_uppercase()));
            if reason.as_ref().is_some_and(|r| !r.is_known()) {
                return Err(CliError::Usage(
                    "--reason must be one of the document's codes (LOS, STO, EXP, CLO, COM, FRD, OTH, …)".into(),
                ));
            }
            let mut edits = CardEdits::default();
            edits.card_status = Some(status);
            edits.reason = reason;
            edits.memo = memo;
            let key = cardsync_hyper::random_token()
                .ok()
                .and_then(|k| IdempotencyKey::new(&k))
                .ok_or_else(|| CliError::Usage("the system's random generator failed".into()))?;
            let platform = BaseUrl::parse(&format!("{}{}", base.as_str(), paths::PLATFORM_BASE))
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let config = IssuerConfig::new(platform).with_token(need_token(token)?);
            let patch = UpdateCard::new(card_id.clone(), edits, key)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let request = patch
                .encode(&config)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let answer = runtime()?.block_on(send(&transport, request, UpdateCard::IDEMPOTENCY))?;
            let card = UpdateCard::decode(&answer)
                .map_err(|e| remote_error(&format!("card {card_id}"), e))?;
            print_card(&mut out, global.output, &card)?;
        }
        IssuerCommand::UpdateCards {
            file,
            customer,
            account,
            remote,
        } => {
            let (base, token, transport) = connect(&remote, global)?;
            let text = std::fs::read(&file).map_err(io_err(&file))?;
            let input = |message: String| CliError::Input {
                path: file.clone(),
                message,
            };
            let mut value: Value =
                serde_json::from_slice(&text).map_err(|e| input(format!("not JSON: {e}")))?;
            // The identifiers come from the flags where the file leaves them out.
            if let Some(cards) = value.get_mut("cards").and_then(Value::as_array_mut) {
                for card in cards.iter_mut().filter_map(Value::as_object_mut) {
                    card.entry("sourceCustomerId")
                        .or_insert_with(|| customer.clone().into());
                    card.entry("sourceAccountId")
                        .or_insert_with(|| account.clone().into());
                }
            }
            let body = serde_json::to_vec(&value).unwrap_or_default();
            let received = decode_update_cards_body(&body).map_err(|e| input(e.to_string()))?;
            if received
                .iter()
                .any(|r| r.customer_id != customer || r.account_id != account)
            {
                return Err(input(
                    "a card names another customer or account than --customer and --account".into(),
                ));
            }
            let cards: Vec<FeedCard> = received.into_iter().map(|r| r.card).collect();
            let count = cards.len();
            let config = IssuerConfig::new(base).with_token(need_token(token)?);
            let request = UpdateCards::new(customer.clone(), account.clone(), cards)
                .map_err(|e| input(e.to_string()))?
                .encode(&config)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let answer =
                runtime()?.block_on(send(&transport, request, UpdateCards::IDEMPOTENCY))?;
            let accepted = UpdateCards::decode(&answer)
                .map_err(|e| remote_error(&format!("account {account}"), e))?;
            let id = accepted.request_id.unwrap_or_default();
            match global.output {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    json!({"request_id": id, "cards": count, "customer": customer, "account": account})
                )?,
                OutputFormat::Text => writeln!(
                    out,
                    "{count} card{} of account {account} sent to the issuer feed (request {})",
                    if count == 1 { "" } else { "s" },
                    crate::show::plain(&id)
                )?,
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn print_card<W: Write>(
    out: &mut W,
    format: OutputFormat,
    card: &IssuedCard,
) -> Result<(), CliError> {
    let d = &card.card_details;
    let status = d.card_status.as_ref().map(|s| s.as_str().to_owned());
    let reason = d.status_reason.as_ref().map(|r| r.as_str().to_owned());
    match format {
        OutputFormat::Json => writeln!(
            out,
            "{}",
            json!({"card_id": d.id, "status": status, "reason": reason,
                   "bin": d.bin, "last_four": d.last_four,
                   "reissued_to_id": d.reissued_to_id, "reissued_from_id": d.reissued_from_id})
        )?,
        OutputFormat::Text => {
            writeln!(
                out,
                "card {} ({}…{}) is {}{}",
                crate::show::plain(d.id.as_deref().unwrap_or("?")),
                crate::show::text(d.bin.as_deref().unwrap_or("")),
                crate::show::text(d.last_four.as_deref().unwrap_or("")),
                crate::show::text(status.as_deref().unwrap_or("?")),
                d.status_reason
                    .as_ref()
                    .map(|r| format!(" ({}: {})", crate::show::text(r.as_str()), r.description()))
                    .unwrap_or_default()
            )?;
            if let Some(to) = &d.reissued_to_id {
                writeln!(out, "reissued as card {}", crate::show::plain(to))?;
            }
        }
    }
    Ok(())
}

/// A card number from standard input: its first line (at most 64 bytes; the rest is not read).
fn read_card_from_stdin() -> Result<zeroize::Zeroizing<String>, CliError> {
    use std::io::Read;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(65)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::Usage(format!("--card -: cannot read standard input: {e}")))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CliError::Usage("--card -: standard input is not text".into()))?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(CliError::Usage(
            "--card -: give the card number on standard input".into(),
        ));
    }
    if bytes.len() > 64 {
        return Err(CliError::Usage(
            "--card -: standard input holds more than a card number".into(),
        ));
    }
    Ok(zeroize::Zeroizing::new(line.to_owned()))
}
