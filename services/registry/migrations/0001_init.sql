-- The registry's schema: models, versions with lineage, content-addressed
-- artifacts, aliases, deployments, the audit log and the transactional outbox.

CREATE TABLE models (
    name            text PRIMARY KEY,
    task            text NOT NULL CHECK (task IN ('binary', 'multiclass', 'regression')),
    -- Ordered list of {"name", "type", "required"}: the dense tensor's column order.
    features        jsonb NOT NULL,
    description     text NOT NULL DEFAULT '',
    tags            jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The last version number handed out; bumped under the row lock.
    latest_version  bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE artifacts (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content     bytea NOT NULL,
    size_bytes  bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE versions (
    model               text NOT NULL REFERENCES models (name),
    version             bigint NOT NULL CHECK (version > 0),
    spec_json           text NOT NULL,
    parent_version      bigint NOT NULL DEFAULT 0,
    source              text NOT NULL CHECK (source IN ('spec', 'online-snapshot', 'batch')),
    -- List of {"topic", "partition", "first_offset", "last_offset"} (inclusive).
    offsets             jsonb NOT NULL DEFAULT '[]'::jsonb,
    example_count       bigint NOT NULL DEFAULT 0,
    metrics             jsonb NOT NULL DEFAULT '{}'::jsonb,
    seed                bigint NOT NULL DEFAULT 0,
    artifact_sha256     text NOT NULL REFERENCES artifacts (sha256),
    artifact_signature  text NOT NULL,
    artifact_format     text NOT NULL,
    artifact_size_bytes bigint NOT NULL,
    description         text NOT NULL DEFAULT '',
    tags                jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);

CREATE TABLE aliases (
    model       text NOT NULL REFERENCES models (name),
    alias       text NOT NULL,
    version     bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES versions (model, version)
);

CREATE TABLE deployments (
    model       text PRIMARY KEY REFERENCES models (name),
    -- List of {"version", "weight", "role"}.
    routes      jsonb NOT NULL,
    mode        text NOT NULL CHECK (mode IN ('live', 'pinned')),
    strategy    text NOT NULL,
    revision    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    actor        text NOT NULL,
    action       text NOT NULL,
    model        text NOT NULL,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_model_id ON audit_log (model, id);

CREATE TABLE outbox (
    sequence      bigserial PRIMARY KEY,
    -- Kafka record key (the model name) and value (a serialized RegistryEvent).
    key           text NOT NULL,
    event         bytea NOT NULL,
    -- W3C trace context of the change: list of [name, value].
    headers       jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);

CREATE INDEX outbox_unpublished ON outbox (sequence) WHERE published_at IS NULL;
