-- Zendesk accounts ("desks") and their tickets, users, groups and comments.
create table control.desks (
    desk_id                 bigint generated always as identity primary key,
    name                    text        not null unique
        check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    tenant_id               text        not null,
    subdomain               text        not null,
    base_url                text        not null,
    auth_kind               text        not null check (auth_kind in ('token', 'oauth')),
    auth_email              text,
    token_encrypted         bytea       not null,
    active                  boolean     not null default true,
    sync_interval_seconds   integer     not null default 300 check (sync_interval_seconds > 0),
    -- the plan's rate limits: incremental exports (10, or 30 with High Volume) and the rest
    export_rate_per_minute  integer     not null default 10 check (export_rate_per_minute > 0),
    api_rate_per_minute     integer     not null default 200 check (api_rate_per_minute > 0),
    ticket_cursor           text,       -- after_cursor of the last committed ticket export page
    events_cursor           bigint,     -- start_time (unix s) of the next ticket events page
    last_synced_at          timestamptz,
    last_sync_error         text,
    created_at              timestamptz not null default now(),
    updated_at              timestamptz not null default now(),
    check (auth_kind = 'oauth' or auth_email is not null)
);

create table raw.zendesk_tickets (
    desk_id          bigint      not null references control.desks (desk_id),
    ticket_id        bigint      not null,
    tenant_id        text        not null,
    status           text,
    subject          text,
    priority         text,
    ticket_type      text,
    requester_id     bigint,
    req_name         text,
    req_email        text,
    assignee_id      bigint,
    assignee_name    text,
    group_id         bigint,
    group_name       text,
    organization_id  bigint,
    created_at       timestamptz,
    updated_at       timestamptz,
    generated_at     timestamptz not null,
    solved_at        timestamptz,
    is_deleted       boolean     not null default false,
    raw_data         jsonb       not null,
    synced_at        timestamptz not null default now(),
    primary key (desk_id, ticket_id)
);
create index zendesk_tickets_status on raw.zendesk_tickets (desk_id, status);
create index zendesk_tickets_updated on raw.zendesk_tickets (desk_id, updated_at);
create index zendesk_tickets_tenant on raw.zendesk_tickets (tenant_id, created_at);

create table raw.zendesk_users (
    desk_id      bigint      not null references control.desks (desk_id),
    user_id      bigint      not null,
    tenant_id    text        not null,
    name         text,
    email        text,
    role         text,
    external_id  text,
    updated_at   timestamptz,
    raw_data     jsonb       not null,
    synced_at    timestamptz not null default now(),
    primary key (desk_id, user_id)
);

create table raw.zendesk_groups (
    desk_id      bigint      not null references control.desks (desk_id),
    group_id     bigint      not null,
    tenant_id    text        not null,
    name         text,
    updated_at   timestamptz,
    raw_data     jsonb       not null,
    synced_at    timestamptz not null default now(),
    primary key (desk_id, group_id)
);

create table raw.zendesk_ticket_comments (
    desk_id      bigint      not null references control.desks (desk_id),
    comment_id   bigint      not null,
    tenant_id    text        not null,
    ticket_id    bigint      not null,
    author_id    bigint,
    public       boolean,
    body         text,
    created_at   timestamptz,
    raw_data     jsonb       not null,
    synced_at    timestamptz not null default now(),
    primary key (desk_id, comment_id)
);
create index zendesk_ticket_comments_ticket on raw.zendesk_ticket_comments (desk_id, ticket_id);
create index zendesk_ticket_comments_created on raw.zendesk_ticket_comments (tenant_id, created_at);
