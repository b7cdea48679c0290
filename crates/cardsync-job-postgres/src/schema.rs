//! The schema, as numbered migrations the journal applies itself: each once, in order, in one
//! transaction under an advisory lock, so that many workers starting at once apply it once.

use tokio_postgres::Client;

use crate::PgError;

/// The advisory lock migrations take (any fixed number; this one spells "cardsync").
const MIGRATION_LOCK: i64 = 0x6361_7264_7379_6e63;

/// The migrations, by version. Never edit one that was released: add the next.
pub(crate) const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2), (3, V3)];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 3;

const V1: &str = "
CREATE TABLE cardsync_jobs (
    job_id        bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    -- A keyed fingerprint of the merchant key (never the key): jobs of one merchant share
    -- its limits.
    merchant      text NOT NULL,
    -- The environment variable workers read the merchant key from.
    key_env       text NOT NULL,
    base_url      text NOT NULL,
    -- The id of the journal key the cards were sealed with (never the key).
    key_id        text NOT NULL,
    state         text NOT NULL DEFAULT 'planning'
                  CHECK (state IN ('planning', 'open', 'exported', 'abandoned')),
    rows          bigint NOT NULL DEFAULT 0,
    invalid       bigint NOT NULL DEFAULT 0,
    duplicates    bigint NOT NULL DEFAULT 0,
    max_in_flight integer NOT NULL DEFAULT 4 CHECK (max_in_flight > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- While planning: when the planner last stored something (a create that stopped long
    -- ago is started again; a live one is not disturbed).
    touched_at    timestamptz NOT NULL DEFAULT now(),
    planned_at    timestamptz,
    finished_at   timestamptz
);

CREATE TABLE cardsync_merchants (
    merchant   text PRIMARY KEY,
    -- No request of this merchant's starts before then (a Retry-After, for every worker).
    not_before timestamptz NOT NULL DEFAULT '-infinity'
);

CREATE TABLE cardsync_requests (
    job_id      bigint NOT NULL REFERENCES cardsync_jobs ON DELETE CASCADE,
    seq         integer NOT NULL,
    -- The job's merchant (as in cardsync_jobs), for the per-merchant limit.
    merchant    text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('batch', 'subscription')),
    se_number   text,
    cards       integer NOT NULL,
    state       text NOT NULL CHECK (state IN ('planned', 'sending', 'sent', 'completed', 'done',
                                              'failed', 'abandoned')),
    batch_id    text UNIQUE,
    event_id    text,
    message     text,
    -- The fencing token: bumped by every claim; every write of a claim names it.
    epoch       bigint NOT NULL DEFAULT 0,
    lease_owner text,
    lease_until timestamptz,
    -- A webhook said its results are ready.
    ready       boolean NOT NULL DEFAULT false,
    next_check  timestamptz NOT NULL DEFAULT now(),
    checks      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX cardsync_requests_work ON cardsync_requests (state, next_check);
CREATE INDEX cardsync_requests_leased ON cardsync_requests (merchant, lease_until)
    WHERE lease_owner IS NOT NULL;

-- A request's cards, sealed (AES-256-GCM) as one value under the journal key, which the
-- database never sees; erased once the request is final.
CREATE TABLE cardsync_card_sets (
    job_id bigint NOT NULL,
    seq    integer NOT NULL,
    cards  bytea NOT NULL,
    PRIMARY KEY (job_id, seq),
    FOREIGN KEY (job_id, seq) REFERENCES cardsync_requests ON DELETE CASCADE
);

-- Keyed hashes (HMAC-SHA256) of the planned cards, for the duplicate check while a job is
-- planned; erased when planning ends.
CREATE TABLE cardsync_fingerprints (
    job_id      bigint NOT NULL REFERENCES cardsync_jobs ON DELETE CASCADE,
    fingerprint bytea NOT NULL,
    seq         integer NOT NULL,
    row_no      bigint NOT NULL,
    PRIMARY KEY (job_id, fingerprint)
);

-- A request's result rows, sealed as one value; and their counts by status.
CREATE TABLE cardsync_results (
    job_id  bigint NOT NULL REFERENCES cardsync_jobs ON DELETE CASCADE,
    seq     integer NOT NULL,
    rows    integer NOT NULL,
    results bytea NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE cardsync_result_counts (
    job_id bigint NOT NULL REFERENCES cardsync_jobs ON DELETE CASCADE,
    seq    integer NOT NULL,
    status text NOT NULL,
    n      integer NOT NULL,
    PRIMARY KEY (job_id, seq, status)
);

-- Webhook events, recorded once whichever receiver got them.
CREATE TABLE cardsync_events (
    event_id    text PRIMARY KEY,
    trigger_id  integer,
    batch_id    text,
    received_at timestamptz NOT NULL DEFAULT now(),
    received_by text NOT NULL
);

-- What a worker learned after its claim was taken from it (it paused past its lease): kept
-- for the person who decides about the request, never applied by itself.
CREATE TABLE cardsync_late_answers (
    job_id   bigint NOT NULL,
    seq      integer NOT NULL,
    epoch    bigint NOT NULL,
    batch_id text,
    message  text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, seq, epoch)
);
";

/// Rows that decide where and what is sent are authenticated: a row changed by anyone without
/// the journal key is refused. A request's cards and results are sealed for its `version`, so
/// that an older sealed value cannot be put back. The merchant identity key (which merchant
/// fingerprints are made with) is kept sealed, so that it outlives key rotations.
const V2: &str = "
ALTER TABLE cardsync_jobs ADD COLUMN mac bytea;
ALTER TABLE cardsync_requests ADD COLUMN version bigint NOT NULL DEFAULT 0;
ALTER TABLE cardsync_requests ADD COLUMN mac bytea;
CREATE TABLE cardsync_secrets (
    name   text PRIMARY KEY,
    -- Sealed under the journal key (its id is the value's first 8 bytes).
    sealed bytea NOT NULL
);
";

/// American Express update events: each is recorded with the merchant whose receiver URL got
/// it, and becomes an update to fetch for each open job of that merchant with subscriptions
/// (fetched by workers under a claim, like a batch's results; its results sealed, and counted
/// under request 0).
const V3: &str = "
ALTER TABLE cardsync_events ADD COLUMN merchant text;
CREATE TABLE cardsync_updates (
    job_id      bigint NOT NULL REFERENCES cardsync_jobs ON DELETE CASCADE,
    event_id    text NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'done')),
    epoch       bigint NOT NULL DEFAULT 0,
    lease_owner text,
    lease_until timestamptz,
    next_check  timestamptz NOT NULL DEFAULT now(),
    checks      integer NOT NULL DEFAULT 0,
    rows        integer,
    results     bytea,
    mac         bytea,
    PRIMARY KEY (job_id, event_id)
);
CREATE INDEX cardsync_updates_work ON cardsync_updates (state, next_check);
";

/// Applies the migrations this database lacks.
pub(crate) async fn migrate(client: &mut Client) -> Result<i32, PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS cardsync_schema (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM cardsync_schema", &[])
        .await?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(PgError::NewerSchema {
            found: current,
            known: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO cardsync_schema (version) VALUES ($1)",
            &[version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(SCHEMA_VERSION)
}
