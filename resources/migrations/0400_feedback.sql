-- Feedback insights: workspaces, their sources, the uniform feedback items, sentiment model
-- evaluations, topic models and the daily insight reports.

create table control.workspaces (
    workspace_id       bigint generated always as identity primary key,
    name               text        not null unique,
    tenant_id          text        not null,
    -- sha256 hex of the webhook bearer token; the token itself is shown once and never stored
    webhook_token_hash text,
    created_at         timestamptz not null default now()
);

create table control.feedback_sources (
    source_id      bigint generated always as identity primary key,
    workspace_id   bigint      not null references control.workspaces (workspace_id),
    name           text        not null,
    kind           text        not null,
    config         jsonb       not null default '{}'::jsonb,
    active         boolean     not null default true,
    -- where the next pull starts; committed in the same transaction as the items it covers
    cursor         jsonb       not null default '{}'::jsonb,
    last_pulled_at timestamptz,
    created_at     timestamptz not null default now(),
    unique (workspace_id, name)
);
create index feedback_sources_kind on control.feedback_sources (kind) where active;

create table raw.feedback_items (
    item_id         text        primary key,  -- stable hash of (workspace, source, external id)
    workspace_id    bigint      not null references control.workspaces (workspace_id),
    tenant_id       text        not null,
    source          text        not null,     -- the source kind: discourse, zendesk, webhook ...
    source_id       bigint      not null references control.feedback_sources (source_id),
    external_id     text        not null,
    author          text,
    text            text        not null,     -- plain text, HTML removed
    created_at      timestamptz not null,
    rating          text,                     -- good | bad | a number, when the source has one
    content_hash    text        not null,     -- of text: enrichment reruns when it changes
    language        text,
    language_score  double precision,
    sentiment_label text,                     -- positive | neutral | negative
    sentiment_score double precision,         -- -1 .. 1
    sentiment_model text,                     -- which engine scored this item
    topics          jsonb       not null default '[]'::jsonb,  -- topic labels
    enriched_hash   text,                     -- content_hash at the last enrichment
    raw_data        jsonb       not null default '{}'::jsonb,
    ingested_at     timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (source_id, external_id)
);
create index feedback_items_workspace_created on raw.feedback_items (workspace_id, created_at);
create index feedback_items_unenriched on raw.feedback_items (workspace_id)
    where enriched_hash is distinct from content_hash;

-- Every sentiment model selection: which engine won for a tenant and on what evidence.
create table control.sentiment_evaluations (
    evaluation_id bigint generated always as identity primary key,
    tenant_id     text        not null,
    evaluated_at  timestamptz not null default now(),
    chosen_engine text        not null,
    train_size    integer     not null,
    test_size     integer     not null,
    figures       jsonb       not null  -- per engine: accuracy, macro_f1; majority baseline
);
create index sentiment_evaluations_tenant on control.sentiment_evaluations (tenant_id, evaluated_at);

-- The topic model last fitted per workspace (labels and top terms), for people and reports.
create table control.topic_models (
    workspace_id bigint      primary key references control.workspaces (workspace_id),
    fitted_at    timestamptz not null default now(),
    items        integer     not null,
    topics       jsonb       not null
);

create table analytics.insight_reports (
    workspace_id  bigint           not null references control.workspaces (workspace_id),
    day           date             not null,
    source        text             not null,  -- a source kind, or 'all'
    tenant_id     text             not null,
    items         integer          not null,
    positive      integer          not null,
    neutral       integer          not null,
    negative      integer          not null,
    avg_sentiment double precision,
    top_topics    jsonb            not null default '[]'::jsonb,
    anomalies     jsonb            not null default '[]'::jsonb,
    generated_at  timestamptz      not null default now(),
    primary key (workspace_id, day, source)
);
