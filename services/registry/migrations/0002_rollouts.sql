-- Rollouts: a candidate version moving in against a model's primary, step by
-- step, and every transition it made (who, when, why, on what evidence).

CREATE TABLE rollouts (
    id                 text PRIMARY KEY,
    -- Draw order (taken under the deployment's row lock): newest is highest.
    seq                bigserial NOT NULL UNIQUE,
    model              text NOT NULL REFERENCES models (name),
    strategy           text NOT NULL
        CHECK (strategy IN ('blue-green', 'canary', 'rolling', 'shadow', 'bandit')),
    state              text NOT NULL
        CHECK (state IN ('pending', 'progressing', 'paused', 'promoted', 'rolled_back', 'aborted')),
    baseline_version   bigint NOT NULL,
    candidate_version  bigint NOT NULL,
    step               integer NOT NULL DEFAULT 0 CHECK (step >= 0),
    -- {"step_percents": [...], "interval_s", "min_samples", "max_drop", "alpha",
    --  "shadow_percent", "bandit_floor_weight", "max_latency_ratio"}, every field set.
    policy             jsonb NOT NULL,
    revision           bigint NOT NULL CHECK (revision > 0),
    -- Who started it.
    actor              text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    step_started_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (baseline_version <> candidate_version),
    FOREIGN KEY (model, baseline_version) REFERENCES versions (model, version),
    FOREIGN KEY (model, candidate_version) REFERENCES versions (model, version)
);

-- At most one rollout per model is not finished.
CREATE UNIQUE INDEX rollouts_one_active_per_model ON rollouts (model)
    WHERE state IN ('pending', 'progressing', 'paused');
CREATE INDEX rollouts_model_seq ON rollouts (model, seq);

CREATE TABLE rollout_transitions (
    id           bigserial PRIMARY KEY,
    rollout_id   text NOT NULL REFERENCES rollouts (id),
    -- '' for the start.
    from_state   text NOT NULL,
    to_state     text NOT NULL,
    action       text NOT NULL
        CHECK (action IN ('start', 'pause', 'resume', 'advance', 'promote', 'rollback', 'abort')),
    step         integer NOT NULL,
    -- The rollout's revision after this transition.
    revision     bigint NOT NULL,
    actor        text NOT NULL,
    reason       text NOT NULL DEFAULT '',
    -- Metric name -> value: sample counts, metric values, test statistics.
    evidence     jsonb NOT NULL DEFAULT '{}'::jsonb,
    at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (rollout_id, revision)
);
