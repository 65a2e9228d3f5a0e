-- The outbox and the dead-letter queue.
--
-- `event_deliveries` holds one row per pending async delivery: written with its event,
-- leased (`locked_until`) while a process runs it, deleted once its handler succeeded,
-- and moved to `dead_letters` when it failed for good. `history` is the JSON array of
-- its failed attempts; `redriven_from` the dead letter it came back from.
ALTER TABLE event_deliveries ADD COLUMN IF NOT EXISTS history JSONB NOT NULL DEFAULT '[]';
ALTER TABLE event_deliveries ADD COLUMN IF NOT EXISTS redriven_from TEXT;

CREATE INDEX IF NOT EXISTS idx_deliveries_handler_due
    ON event_deliveries (handler, next_attempt_at) WHERE status = 'pending';

-- One row per delivery that failed for good. `entry` is the whole dead letter as JSON
-- (event, handler, attempts, errors); the columns beside it are what filters read and
-- what a redrive or discard changes.
CREATE TABLE IF NOT EXISTS dead_letters (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    handler         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    last_failure_at TIMESTAMPTZ NOT NULL,
    state           TEXT NOT NULL DEFAULT 'dead' CHECK (state IN ('dead', 'redriven', 'discarded')),
    state_at        TIMESTAMPTZ,
    reason          TEXT,
    entry           TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_dead_letters_failure ON dead_letters (last_failure_at, id);
CREATE INDEX IF NOT EXISTS idx_dead_letters_state ON dead_letters (state, handler);
