-- Subscriptions of the PostgreSQL queue (`PostgresQueue`): which handler takes which event
-- type. A publish adds one `event_deliveries` row per handler subscribed to the event's
-- type; each handler's workers claim their rows.
CREATE TABLE IF NOT EXISTS event_subscriptions (
    handler    TEXT NOT NULL,
    event_type TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (handler, event_type)
);

CREATE INDEX IF NOT EXISTS idx_subscriptions_type ON event_subscriptions (event_type);
