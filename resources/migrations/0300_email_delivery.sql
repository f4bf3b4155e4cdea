-- Email delivery: notifications and their status, delivery receipts, pod routing, retention,
-- template statistics, and Mailgun replay protection.

-- tenant -> pod whose queue email_events.<pod> receives its delivery events (unknown -> default)
create table control.email_tenant_pods (
    tenant_id  text primary key,
    pod        text not null check (pod ~ '^[A-Za-z0-9-]+$'),
    updated_at timestamptz not null default now()
);

-- per-tenant override of the 7 full days personal data is kept
create table control.notification_retention (
    tenant_id      text primary key,
    retention_days integer not null check (retention_days between 1 and 3650),
    updated_at     timestamptz not null default now()
);

-- Mailgun tokens already accepted (replay protection shared by every webhook process)
create table control.mailgun_seen_tokens (
    token   text primary key,
    seen_at timestamptz not null default now()
);
create index mailgun_seen_tokens_seen_at on control.mailgun_seen_tokens (seen_at);

create table raw.notifications (
    notification_id    text primary key,
    tenant_id          text        not null,
    ticket_id          bigint,
    template_id        text        not null,
    recipient          text        not null,
    provider           text        not null check (provider in ('mailgun', 'sendgrid', 'ses')),
    provider_reference text        not null,
    status             text        not null default 'sending' check (status in (
        'sending', 'pending', 'delivered', 'temporary-failure', 'permanent-failure',
        'technical-failure')),
    status_reason      text,
    created_at         timestamptz not null,
    sent_at            timestamptz not null,
    status_updated_at  timestamptz not null default now(),
    custom_params      jsonb       not null default '{}'::jsonb,
    unique (provider, provider_reference)
);
create index notifications_tenant_sent on raw.notifications (tenant_id, sent_at);
create index notifications_sent_at on raw.notifications (sent_at);

-- notifications past retention: no recipient, no custom parameters (they may hold personal data)
create table raw.notification_history (
    notification_id    text primary key,
    tenant_id          text        not null,
    ticket_id          bigint,
    template_id        text        not null,
    provider           text        not null,
    provider_reference text        not null,
    status             text        not null,
    created_at         timestamptz not null,
    sent_at            timestamptz not null,
    status_updated_at  timestamptz not null,
    archived_at        timestamptz not null default now()
);
create index notification_history_tenant_sent on raw.notification_history (tenant_id, sent_at);

-- every provider event once; `orphan` while no notification matched it
create table raw.delivery_events (
    delivery_event_id  bigint generated always as identity primary key,
    provider           text        not null,
    provider_event_id  text        not null,
    provider_reference text        not null,
    tenant_id          text,
    notification_id    text,
    event_type         text        not null,
    outcome            text        not null,
    severity           text,
    reason             text,
    occurred_at        timestamptz not null,
    received_at        timestamptz not null default now(),
    status_applied     text,
    orphan             boolean     not null default false,
    payload            jsonb       not null,
    unique (provider, provider_event_id)
);
create index delivery_events_reference on raw.delivery_events (provider, provider_reference);
create index delivery_events_orphans on raw.delivery_events (provider, provider_reference)
    where orphan;
create index delivery_events_notification on raw.delivery_events (notification_id);
create index delivery_events_occurred on raw.delivery_events (occurred_at);

create table analytics.template_stats_daily (
    day                date    not null,
    tenant_id          text    not null,
    template_id        text    not null,
    status             text    not null,
    notification_count integer not null,
    computed_at        timestamptz not null default now(),
    primary key (day, tenant_id, template_id, status)
);
create index template_stats_daily_tenant on analytics.template_stats_daily (tenant_id, day);
