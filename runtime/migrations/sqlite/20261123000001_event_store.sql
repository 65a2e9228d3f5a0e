-- The event store: the seed's `event_store` table plus position, version, tenant,
-- correlation and subject columns. Times are RFC 3339 text in UTC with exactly six
-- fractional digits (`2026-11-23T10:00:00.123456Z`), so text order is time order.
CREATE TABLE IF NOT EXISTS event_store (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    event_type     TEXT NOT NULL,
    source         TEXT NOT NULL,
    subject        TEXT,
    version        TEXT,
    tenant         TEXT,
    correlation_id TEXT,
    data           TEXT NOT NULL,
    metadata       TEXT,
    timestamp      TEXT NOT NULL,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX IF NOT EXISTS idx_event_type ON event_store (event_type);
CREATE INDEX IF NOT EXISTS idx_timestamp ON event_store (timestamp);
CREATE INDEX IF NOT EXISTS idx_source ON event_store (source);
CREATE INDEX IF NOT EXISTS idx_tenant ON event_store (tenant) WHERE tenant IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_correlation_id ON event_store (correlation_id) WHERE correlation_id IS NOT NULL;

-- Delivery tracking: one row per (event, async handler), written in the same transaction
-- as the event. Used by the reliability layer (retries, dead-letter queue).
CREATE TABLE IF NOT EXISTS event_deliveries (
    event_id         TEXT NOT NULL REFERENCES event_store (id) ON DELETE CASCADE,
    handler          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'in_flight', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    locked_until     TEXT,
    first_failure_at TEXT,
    last_failure_at  TEXT,
    last_error       TEXT,
    PRIMARY KEY (event_id, handler)
);

CREATE INDEX IF NOT EXISTS idx_deliveries_due ON event_deliveries (next_attempt_at) WHERE status = 'pending';
