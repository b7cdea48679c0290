//! `sync`, the embedding entry point: a job end to end in one call; a journal held by another
//! runner is refused; a journal with a plan already is resumed without reading the cards again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cardsync_core::Record;
use cardsync_job::{
    Acquired, Env, Holder, JobOptions, MemorySink, MemoryStore, Store, SyncError, SyncOptions, sync,
};
use cardsync_proto::transport::TransportError;
use cardsync_proto::{BaseUrl, Config, MerchantKey, WebhookEvent};
use cardsync_sandbox::{Emulator, Settings};

struct Clock;

impl Env for Clock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }
    async fn wait(&mut self, deadline: Option<Instant>) -> Option<WebhookEvent> {
        let d = deadline.unwrap_or_else(|| Instant::now() + Duration::from_millis(5));
        tokio::time::sleep_until(d.into()).await;
        None
    }
}

fn options() -> SyncOptions {
    let config = Config::new(BaseUrl::parse("http://127.0.0.1:1/").unwrap())
        .with_merchant_key(MerchantKey::new("sandbox_merchant_key").unwrap());
    SyncOptions::new(JobOptions::new(config).with_poll_max(Duration::from_millis(20)))
}

const CARDS: [(&str, &str, &str); 3] = [
    ("a", "4457010000000009", "01/50"),
    ("b", "5112010000000003", "02/50"),
    ("bad", "4111111111111112", "01/50"),
];

#[tokio::test]
async fn one_call_plans_runs_and_resumes() {
    let mut settings = Settings::default();
    settings.complete_after = Duration::ZERO;
    let emulator = Arc::new(Mutex::new(Emulator::new(settings, SystemTime::now())));
    let started = Instant::now();
    let posts = Arc::new(Mutex::new(0));
    let transport = {
        let posts = posts.clone();
        move |r: http::Request<Vec<u8>>| {
            if r.method() == http::Method::POST {
                *posts.lock().unwrap() += 1;
            }
            let answer = emulator.lock().unwrap().handle(&r, started.elapsed());
            async move { Ok::<_, TransportError>(answer) }
        }
    };
    let cards = || CARDS.iter().map(|(i, c, e)| Record::new(i, c, e));

    // Held by another runner: refused, nothing planned or sent.
    let mut store = MemoryStore::new();
    let Acquired::Taken(other) = store
        .acquire(&Holder::new("other", 1, 0), 0, u64::MAX / 2, &|_| false)
        .unwrap()
    else {
        panic!()
    };
    let mut sink = MemorySink::new();
    let held = sync(
        cards(),
        &transport,
        &mut store,
        &mut sink,
        &mut Clock,
        &options(),
        |_| {},
    )
    .await;
    assert!(matches!(held, Err(SyncError::Held(_))), "{held:?}");
    assert_eq!(*posts.lock().unwrap(), 0);
    store.release(&other).unwrap();

    // The job end to end: one batch, the invalid row handed back.
    let mut rejected = Vec::new();
    let summary = sync(
        cards(),
        &transport,
        &mut store,
        &mut sink,
        &mut Clock,
        &options(),
        |r| rejected.push(r.row),
    )
    .await
    .unwrap();
    assert!(summary.done, "{summary:?}");
    assert_eq!(rejected, [3]);
    let ids: Vec<String> = sink.rows().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(*posts.lock().unwrap(), 1);

    // Called again on the same journal: the job is done; the cards are not read, nothing sent.
    let again = sync(
        std::iter::empty(),
        &transport,
        &mut store,
        &mut sink,
        &mut Clock,
        &options(),
        |_| panic!("no row is read"),
    )
    .await
    .unwrap();
    assert!(again.done);
    assert_eq!(*posts.lock().unwrap(), 1);
    // The lease was given back: another runner takes the journal at once.
    let now = Clock.unix_ms();
    assert!(matches!(
        store.acquire(&Holder::new("next", 2, now), now, 1_000, &|_| false),
        Ok(Acquired::Taken(_))
    ));
}
