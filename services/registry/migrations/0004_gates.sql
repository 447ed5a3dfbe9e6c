-- Promotion gates: what a version must show before a rollout of it may start
-- or be promoted, per model, and the evaluations they are judged on.

CREATE TABLE promotion_gates (
    model                      text PRIMARY KEY REFERENCES models (name),
    -- The min_score gate: both set, or both NULL (no score gate).
    score_metric               text,
    min_score                  double precision,
    -- 0: no min_examples gate.
    min_examples               bigint NOT NULL DEFAULT 0 CHECK (min_examples >= 0),
    require_schema_compatible  boolean NOT NULL DEFAULT true,
    -- NULL: no latency gate.
    max_warmup_latency_ms      double precision CHECK (max_warmup_latency_ms > 0),
    revision                   bigint NOT NULL CHECK (revision > 0),
    updated_by                 text NOT NULL,
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CHECK ((score_metric IS NULL) = (min_score IS NULL))
);

-- The latest evaluation of a version per metric and source (a trainer's
-- progressive-validation score, a gateway replica's warm-up latency).
CREATE TABLE evaluations (
    model        text NOT NULL,
    version      bigint NOT NULL,
    metric       text NOT NULL,
    source       text NOT NULL,
    value        double precision NOT NULL,
    examples     bigint NOT NULL DEFAULT 0 CHECK (examples >= 0),
    -- When the source measured it; an older report never replaces a newer one.
    at           timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version, metric, source),
    FOREIGN KEY (model, version) REFERENCES versions (model, version)
);
