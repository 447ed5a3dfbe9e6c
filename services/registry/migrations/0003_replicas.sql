-- Gateway replicas: each heartbeat upserts its row (no audit entry, no event);
-- a row whose last heartbeat is older than the replica timeout is no longer
-- listed and is deleted lazily. Rolling rollouts record the replicas they switch.

CREATE TABLE replicas (
    id                  text PRIMARY KEY,
    -- host:port clients reach the replica at.
    address             text NOT NULL,
    -- [{"model", "version", "ready", "warmup_latency_ms"}]: what it has in memory.
    versions            jsonb NOT NULL DEFAULT '[]'::jsonb,
    first_heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at   timestamptz NOT NULL DEFAULT now()
);

-- Rolling: the replicas switched to the candidate so far, in switch order.
ALTER TABLE rollouts ADD COLUMN switched_replicas text[] NOT NULL DEFAULT '{}';

-- Rolling: the replica an ADVANCE switched ('' for every other transition).
ALTER TABLE rollout_transitions ADD COLUMN switched_replica text NOT NULL DEFAULT '';
