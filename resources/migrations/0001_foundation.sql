-- Schemas and the foundation's control tables: queues, dead letters, acknowledged ids, alerts.
create schema if not exists control;
create schema if not exists raw;
create schema if not exists analytics;

create table control.queue_messages (
    message_id    bigint generated always as identity primary key,
    queue         text        not null,
    dedup_id      text        not null,
    body          jsonb       not null,
    enqueued_at   timestamptz not null default now(),
    visible_at    timestamptz not null default now(),
    receive_count integer     not null default 0,
    lease_token   uuid,
    last_error    text
);
-- receive: the oldest visible messages of one queue
create index queue_messages_visible on control.queue_messages (queue, visible_at, message_id);

create table control.queue_dead_letters (
    message_id       bigint primary key,
    queue            text        not null,
    dedup_id         text        not null,
    body             jsonb       not null,
    enqueued_at      timestamptz not null,
    receive_count    integer     not null,
    error            text        not null,
    dead_lettered_at timestamptz not null default now()
);
create index queue_dead_letters_queue on control.queue_dead_letters (queue, dead_lettered_at);

-- ids whose effect was committed and acknowledged: a later duplicate is flagged on receive
create table control.queue_acks (
    queue    text        not null,
    dedup_id text        not null,
    acked_at timestamptz not null default now(),
    primary key (queue, dedup_id)
);
create index queue_acks_acked_at on control.queue_acks (acked_at);

create table control.alerts (
    alert_id   bigint generated always as identity primary key,
    raised_at  timestamptz not null default now(),
    severity   text        not null,
    source     text        not null,
    summary    text        not null,
    details    jsonb       not null default '{}'::jsonb
);
create index alerts_raised_at on control.alerts (raised_at);
