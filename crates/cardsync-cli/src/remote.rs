//! The connection to CardSync: base URL, keys, and the client built from them.

use cardsync_hyper::{CallError, Client, HyperTransport, Options};
use cardsync_proto::{BaseUrl, Config, MerchantKey, PartnerKey};

use crate::error::CliError;

/// The HTTPS transport for a base URL: plain HTTP allowed only when it is a loopback address.
pub(crate) fn transport_for(base: &BaseUrl) -> Result<HyperTransport, CliError> {
    // Refused here, before anything is planned or sent: the transport would refuse every call.
    if !base.is_loopback() && !base.as_str().starts_with("https://") {
        return Err(CliError::Usage(format!(
            "--base-url {}: plain http:// goes only to this machine (an emulator on a loopback \
             address); CardSync is reached over https://",
            base.as_str()
        )));
    }
    let options = if base.is_loopback() {
        Options::loopback()
    } else {
        Options::default()
    };
    HyperTransport::new(options).map_err(|e| CliError::Usage(format!("cannot set up TLS: {e}")))
}

/// Where CardSync is and which keys to use, from the global flags.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct Remote {
    /// CardSync base URL (the sandbox unless set). Plain http:// is allowed only to loopback.
    #[arg(
        long,
        global = true,
        env = "CARDSYNC_BASE_URL",
        value_name = "URL",
        default_value = "https://sandbox.cardsync.io/"
    )]
    pub(crate) base_url: String,
    /// Merchant API key.
    #[arg(
        long,
        global = true,
        env = "CARDSYNC_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub(crate) api_key: Option<String>,
    /// Partner master key, for `merchant` and partner-level `webhooks set`.
    #[arg(
        long,
        global = true,
        env = "CARDSYNC_PARTNER_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub(crate) partner_key: Option<String>,
}

impl Remote {
    /// The client, with whatever keys were given.
    pub(crate) fn client(&self) -> Result<Client, CliError> {
        let (transport, config) = self.parts()?;
        Ok(Client::new(transport, config))
    }

    /// The transport and the configuration (base URL and keys) the client is made of.
    pub(crate) fn parts(&self) -> Result<(HyperTransport, Config), CliError> {
        let base = BaseUrl::parse(&self.base_url)
            .map_err(|e| CliError::Usage(format!("--base-url {:?}: {e}", self.base_url)))?;
        let mut config = Config::new(base.clone());
        if let Some(key) = &self.api_key {
            config = config.with_merchant_key(
                MerchantKey::new(key).map_err(|e| CliError::Usage(format!("--api-key: {e}")))?,
            );
        }
        if let Some(key) = &self.partner_key {
            config = config.with_partner_key(
                PartnerKey::new(key).map_err(|e| CliError::Usage(format!("--partner-key: {e}")))?,
            );
        }
        Ok((transport_for(&base)?, config))
    }

    /// Checks that the merchant key is there, for commands that need it.
    pub(crate) fn need_api_key(&self) -> Result<(), CliError> {
        if self.api_key.is_none() {
            return Err(CliError::Usage(
                "no API key: set CARDSYNC_API_KEY or pass --api-key".to_owned(),
            ));
        }
        Ok(())
    }

    /// Checks that the partner key is there.
    pub(crate) fn need_partner_key(&self) -> Result<(), CliError> {
        if self.partner_key.is_none() {
            return Err(CliError::Usage(
                "no partner key: set CARDSYNC_PARTNER_KEY or pass --partner-key".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A webhook event handed to the job, with the way to acknowledge it: send `()` once it is
/// durably recorded (the receiver then answers 200); dropping it answers 500, and CardSync
/// delivers the event again.
pub(crate) type Delivered = (
    cardsync_proto::WebhookEvent,
    tokio::sync::oneshot::Sender<()>,
);

/// How many events may wait for the job to record them before deliveries are answered 503.
const EVENTS_WAITING: usize = 1_000;

/// Starts a webhook receiver whose events go to a channel, each answered 200 only once the
/// receiving side acknowledges it (after recording it).
pub(crate) async fn receiver_channel(
    addr: std::net::SocketAddr,
    token: &str,
) -> Result<
    (
        cardsync_hyper::WebhookReceiver,
        tokio::sync::mpsc::Receiver<Delivered>,
    ),
    CliError,
> {
    use cardsync_hyper::{HandlerError, ReceiverOptions, WebhookReceiver};
    use tokio::sync::mpsc::error::TrySendError;
    let (tx, rx) = tokio::sync::mpsc::channel::<Delivered>(EVENTS_WAITING);
    let receiver = WebhookReceiver::start(addr, token, ReceiverOptions::default(), move |event| {
        let tx = tx.clone();
        async move {
            let (ack, acked) = tokio::sync::oneshot::channel();
            match tx.try_send((event, ack)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    return Err(HandlerError::busy(format!(
                        "{EVENTS_WAITING} events wait to be recorded"
                    )));
                }
                Err(TrySendError::Closed(_)) => {
                    return Err(HandlerError::new("the job is not running"));
                }
            }
            acked
                .await
                .map_err(|_| HandlerError::new("the job stopped before recording the event"))
        }
    })
    .await
    .map_err(|e| CliError::Usage(format!("cannot start the webhook receiver on {addr}: {e}")))?;
    Ok((receiver, rx))
}

/// A failed call, said in words that tell the user what to do.
pub(crate) fn remote_error(what: &str, e: CallError) -> CliError {
    let hint = match e.status().map(|s| s.as_u16()) {
        Some(401) => " (check the API key)",
        Some(403) => " (this key may not do that: merchant and partner keys differ)",
        Some(404) => " (unknown id, or results purged after 10 days)",
        Some(409) => " (not ready yet, or already done)",
        Some(429) | Some(500..) => " (CardSync is busy or failing; try again later)",
        _ => "",
    };
    CliError::Remote {
        what: what.to_owned(),
        hint,
        source: Box::new(e),
    }
}
