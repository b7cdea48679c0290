//! The options of `cardsync sync`, shared by the single-machine driver (`local`) and the
//! shared journal's (`shared`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How `sync` learns that results are ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Wait {
    /// Ask CardSync for each batch's status, with backoff.
    Poll,
    /// Run a webhook receiver (registered with CardSync only with --register-webhooks or
    /// --public-url); poll slowly as a fallback.
    Webhook,
}

/// Options of `cardsync sync`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct Args {
    /// The card file (CSV or JSON Lines; see `validate`).
    pub(crate) file: PathBuf,
    /// The results file: CSV, or JSON Lines if it ends in .jsonl. Created with mode 0600: it
    /// holds full card numbers.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// SE number for American Express rows that have none.
    #[arg(long, value_name = "SE")]
    pub(crate) se_number: Option<String>,
    /// The journal that makes the job resumable [default: OUT.journal].
    #[arg(long, value_name = "FILE", conflicts_with = "journal")]
    pub(crate) state: Option<PathBuf>,
    /// Keep the job in the shared PostgreSQL journal instead (postgres://…; see `cardsync
    /// job`): create, work and export in this process, while `cardsync worker`s elsewhere
    /// may help. Card numbers in it are sealed with CARDSYNC_JOURNAL_KEY.
    #[arg(
        long,
        value_name = "URL",
        env = "CARDSYNC_JOURNAL",
        hide_env_values = true
    )]
    pub(crate) journal: Option<String>,
    /// With --journal: the job's name [default: the results file's name].
    #[arg(long, value_name = "NAME", requires = "journal")]
    pub(crate) job: Option<String>,
    /// How to wait for results.
    #[arg(long, value_enum, default_value_t = Wait::Poll)]
    pub(crate) wait: Wait,
    /// With --wait webhook: the address the receiver listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub(crate) listen: SocketAddr,
    /// With --wait webhook: the URL CardSync calls, if not the receiver's own address (behind
    /// a proxy or tunnel). The path must be /webhooks/TOKEN with --token's value.
    #[arg(long, value_name = "URL", requires = "token")]
    pub(crate) public_url: Option<String>,
    /// With --wait webhook: the receiver's secret path token [default: random].
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CARDSYNC_WEBHOOK_TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
    /// With --wait webhook: register the receiver with CardSync for the merchant's batch
    /// available, batch error and American Express update events. This replaces whatever the
    /// merchant had registered for them (CardSync has no call that reads registrations, so
    /// they cannot be put back by this command): use it only when this run's receiver is the
    /// merchant's receiver. Implied by --public-url. Without either, nothing is registered:
    /// register the receiver's URL yourself, or rely on the fallback polling.
    #[arg(long)]
    pub(crate) register_webhooks: bool,
    /// The run talks to an emulator of its own (the demo's): registering webhooks replaces
    /// nothing of the user's, so it is not announced.
    #[arg(skip)]
    pub(crate) own_emulator: bool,
    /// With --wait webhook: how long to wait for American Express updates once every batch is
    /// done, such as 30s, 10m.
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = crate::duration::parse_duration)]
    pub(crate) amex_wait: Duration,
    /// The longest pause between two status checks.
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = crate::duration::parse_duration)]
    pub(crate) poll_max: Duration,
    /// Cards per request, at most 10000.
    #[arg(long, value_name = "N", default_value_t = cardsync_core::MAX_CARDS_PER_REQUEST)]
    pub(crate) max_per_request: usize,
    /// How many requests of each kind (batch POSTs, status checks, results fetches) may be on
    /// their way to CardSync at once. 8 keeps a server 100 ms away busy without holding more
    /// than 8 results bodies in memory.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) concurrency: u16,
    /// If another run holds the job, wait this long for it to finish (such as 30s, 10m)
    /// instead of stopping at once.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration)]
    pub(crate) wait_for_lock: Option<Duration>,
    /// How long the job's lease lasts without renewal (renewed every third of it while the
    /// run goes on): how long a run that was stopped by force keeps another from taking over,
    /// when it was on another host or its process id cannot be checked.
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = crate::duration::parse_duration, hide = true)]
    pub(crate) lease: Duration,
    /// Send again the batches whose POST was interrupted (CardSync may then bill them twice).
    #[arg(long, conflicts_with = "abandon_unconfirmed")]
    pub(crate) resend_unconfirmed: bool,
    /// Give up on the batches whose POST was interrupted; their cards get no results.
    #[arg(long)]
    pub(crate) abandon_unconfirmed: bool,
    /// A batch whose POST was interrupted but which CardSync did receive, as REQUEST=BATCH_ID
    /// (the request number from the message, the batch id from CardSync).
    #[arg(long, value_name = "REQUEST=BATCH_ID")]
    pub(crate) adopt: Vec<String>,
    /// Write over an existing results file (and its changes file) that is not this job's own.
    /// Never over the card file.
    #[arg(long)]
    pub(crate) force: bool,
}

impl Args {
    /// The options of a `sync` run, with defaults for everything but the files.
    pub(crate) fn new(file: PathBuf, out: PathBuf) -> Args {
        Args {
            file,
            out,
            se_number: None,
            state: None,
            journal: None,
            job: None,
            wait: Wait::Poll,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            token: None,
            register_webhooks: false,
            own_emulator: false,
            amex_wait: Duration::from_secs(60),
            poll_max: Duration::from_secs(60),
            max_per_request: cardsync_core::MAX_CARDS_PER_REQUEST,
            concurrency: DEFAULT_CONCURRENCY,
            wait_for_lock: None,
            lease: Duration::from_secs(30),
            resend_unconfirmed: false,
            abandon_unconfirmed: false,
            adopt: Vec::new(),
            force: false,
        }
    }
}

/// Requests of each kind on their way at once, unless `--concurrency` says otherwise.
pub(crate) const DEFAULT_CONCURRENCY: u16 = 8;
