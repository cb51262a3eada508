-- The transactional outbox: events written in the same transaction as the
-- change they describe, relayed to Redis Streams by social_common.outbox.
CREATE TABLE outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type text NOT NULL,
    -- A serialized social.events.v1.Envelope.
    envelope bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
