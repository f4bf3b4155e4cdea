-- Conversations (issue 12): origins, threads, conversation tickets with their state machine,
-- messages with a full-text index, work queues with exact counters, and the daily figures.
--
-- Every row carries its tenant. Writers of one tenant's conversation rows (the `messages` and
-- `conversation_events` drains, the closure sweep, origin re-enabling, work-queue changes) take a
-- transaction-scoped advisory lock per tenant (key 727600, hashtext(tenant_id)), in key order, so
-- two drains at once serialise per tenant instead of racing on "find or create" steps. The unique
-- keys below back that up: a message is stored once per (tenant, message_id), a thread once per
-- (tenant, origin, author), one active ticket per thread, one sequence number per tenant.

-- --- control ----------------------------------------------------------------------------------

create table control.origins (
    origin_id  bigint generated always as identity primary key,
    tenant_id  text        not null,
    name       text        not null check (name <> ''),
    channel    text        not null
        check (channel in ('facebook', 'instagram', 'x', 'whatsapp', 'linkedin', 'mail')),
    -- the channel's own reference (page id, account handle, mailbox): what messages name
    ref        text        not null check (ref <> ''),
    active     boolean     not null default true,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (tenant_id, name),
    unique (tenant_id, ref)
);

create table control.work_queues (
    queue_id   bigint generated always as identity primary key,
    tenant_id  text        not null,
    name       text        not null check (name <> ''),
    -- validated by assets/conversations/rules.py validate_condition before it is saved
    condition  jsonb       not null,
    -- the order agents see queues in: higher first
    priority   integer     not null default 0,
    visible_to jsonb       not null default '{"groups": [], "agents": []}'::jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (tenant_id, name)
);

-- Per-tenant enrichment: a new ticket of this author gets these tags, priority, custom fields.
create table control.enrichment_lists (
    tenant_id          text        not null,
    author_external_id text        not null,
    tags               text[]      not null default '{}',
    priority           text check (priority in ('low', 'normal', 'high', 'urgent')),
    custom_fields      jsonb       not null default '{}'::jsonb,
    updated_at         timestamptz not null default now(),
    primary key (tenant_id, author_external_id)
);

-- Per-tenant overrides of the closure period (SUPPORTFLOW_TICKET_CLOSE_AFTER_MINUTES otherwise).
create table control.conversation_settings (
    tenant_id           text        primary key,
    close_after_minutes integer     check (close_after_minutes > 0),
    updated_at          timestamptz not null default now()
);

-- --- raw ----------------------------------------------------------------------------------------

create table raw.conversation_threads (
    thread_id          bigint generated always as identity primary key,
    tenant_id          text        not null,
    origin_id          bigint      not null references control.origins,
    -- the customer: the author of the thread's customer messages
    author_external_id text        not null,
    author_name        text,
    created_at         timestamptz not null default now(),
    -- sent_at of the newest message that is not shadowed
    last_message_at    timestamptz,
    unique (tenant_id, origin_id, author_external_id)
);

-- The per-tenant sequence counter: `insert ... on conflict do update set last = last + n
-- returning last` hands out a block of numbers atomically, also under concurrent drains.
create table raw.conversation_sequences (
    tenant_id text   primary key,
    last      bigint not null check (last >= 0)
);

create table raw.conversation_tickets (
    ticket_id                 bigserial   primary key,
    tenant_id                 text        not null,
    sequence                  bigint      not null,
    thread_id                 bigint      not null references raw.conversation_threads,
    origin_id                 bigint      not null references control.origins,
    channel                   text        not null,
    -- the customer's external id on the origin (the thread's author)
    author_external_id        text        not null,
    state                     text        not null default 'created'
        check (state in ('created', 'working', 'pending', 'followup', 'solved', 'closed')),
    owner_agent               text,
    owner_group               text,
    priority                  text        not null default 'normal'
        check (priority in ('low', 'normal', 'high', 'urgent')),
    tags                      text[]      not null default '{}',
    topic                     text,
    custom_fields             jsonb       not null default '{}'::jsonb,
    language                  text,
    sentiment_label           text check (sentiment_label in ('negative', 'neutral', 'positive')),
    sentiment_score           double precision,
    star_rating               smallint check (star_rating between 1 and 5),
    visible_message_count     integer     not null default 0,
    first_customer_message_at timestamptz,
    last_customer_message_at  timestamptz,
    first_response_at         timestamptz,
    solved_at                 timestamptz,
    closed_at                 timestamptz,
    followup_until            timestamptz,
    escalated_at              timestamptz,
    -- when the current state began (message sent_at, event occurred_at or the sweep's clock):
    -- a message or event older than this never changes the state
    state_changed_at          timestamptz not null,
    -- the sent_at of the message that opened the ticket
    created_at                timestamptz not null,
    updated_at                timestamptz not null default now(),
    unique (tenant_id, sequence),
    check ((state = 'followup') = (followup_until is not null)),
    check ((state = 'closed') = (closed_at is not null))
);
-- one active ticket per thread: "find or create" can never create a second one
create unique index conversation_tickets_one_active
    on raw.conversation_tickets (thread_id) where state <> 'closed';
create index conversation_tickets_thread on raw.conversation_tickets (thread_id, created_at);
-- the closure and follow-up sweeps
create index conversation_tickets_closable
    on raw.conversation_tickets (state_changed_at) where state in ('solved', 'pending');
create index conversation_tickets_followup
    on raw.conversation_tickets (followup_until) where state = 'followup';

create table raw.conversation_messages (
    tenant_id          text        not null,
    message_id         text        not null check (message_id <> ''),
    -- null while shadowed: a message of a disabled origin belongs to its thread, not a ticket.
    -- No foreign keys on this, the busiest table (three checks per row cost a fifth of the
    -- drain's insert time): the only writer is the drain, which creates the thread and the
    -- ticket in the same transaction under the tenant's lock.
    ticket_id          bigint,
    thread_id          bigint      not null,
    origin_id          bigint      not null,
    kind               text        not null
        check (kind in ('customer', 'agent_reply', 'private_note', 'ai_message', 'ai_suggestion')),
    author_external_id text        not null,
    author_name        text,
    text               text        not null default '',
    attachments        jsonb       not null default '[]'::jsonb,
    rating             smallint check (rating between 1 and 5),
    -- customer messages: the feedback domain's sentiment engine (VADER), in [-1, 1]
    sentiment_score    double precision,
    sent_at            timestamptz not null,
    received_at        timestamptz not null default now(),
    deleted            boolean     not null default false,
    hidden             boolean     not null default false,
    shadowed           boolean     not null default false,
    -- occurred_at of the last hide/unhide applied: an older one arriving late changes nothing
    hidden_changed_at  timestamptz,
    deleted_at         timestamptz,
    -- 'simple': messages come in many languages, so no language's stemming is applied
    search             tsvector generated always as (to_tsvector('simple', text)) stored,
    primary key (tenant_id, message_id),
    check (shadowed or ticket_id is not null)
);
create index conversation_messages_ticket on raw.conversation_messages (ticket_id, sent_at);
create index conversation_messages_thread on raw.conversation_messages (thread_id, sent_at);
create index conversation_messages_shadowed
    on raw.conversation_messages (origin_id, sent_at) where shadowed;
create index conversation_messages_day on raw.conversation_messages (tenant_id, sent_at);
create index conversation_messages_search on raw.conversation_messages using gin (search);

-- No foreign key to the tickets either: the sweep logs 100,000 closures in one statement, and a
-- check per row costs a third of it; every row is written beside its ticket's change.
create table raw.ticket_state_changes (
    change_id   bigint generated always as identity primary key,
    tenant_id   text        not null,
    ticket_id   bigint      not null,
    from_state  text,  -- null when the ticket was created
    to_state    text        not null,
    cause       text        not null check (cause in ('message', 'agent', 'rule', 'schedule')),
    -- the message_id or event_id that caused it (null for the schedule)
    event_id    text,
    changed_at  timestamptz not null,
    recorded_at timestamptz not null default now()
);
create index ticket_state_changes_ticket on raw.ticket_state_changes (ticket_id, change_id);
create index ticket_state_changes_day on raw.ticket_state_changes (tenant_id, changed_at);

create table raw.work_queue_members (
    tenant_id text        not null,
    queue_id  bigint      not null references control.work_queues on delete cascade,
    ticket_id bigint      not null references raw.conversation_tickets,
    -- the ticket's state, so counters per (queue, state) follow from the members
    state     text        not null,
    added_at  timestamptz not null default now(),
    primary key (queue_id, ticket_id)
);
create index work_queue_members_ticket on raw.work_queue_members (ticket_id);

-- Idempotency ledger of conversation_events and message_removed / hidden / unhidden events.
create table raw.conversation_event_ids (
    tenant_id  text        not null,
    event_id   text        not null check (event_id <> ''),
    event_type text        not null,
    applied_at timestamptz not null default now(),
    primary key (tenant_id, event_id)
);

-- --- analytics ----------------------------------------------------------------------------------

-- Tickets per work queue and state, changed by deltas in the transaction that changes membership.
create table analytics.queue_counters (
    tenant_id    text   not null,
    queue_id     bigint not null,
    state        text   not null,
    ticket_count bigint not null check (ticket_count >= 0),
    primary key (queue_id, state)
);
create index queue_counters_tenant on analytics.queue_counters (tenant_id);

create table analytics.conversation_daily (
    day                        date             not null,
    tenant_id                  text             not null,
    origin_id                  bigint           not null,
    origin_name                text,
    channel                    text,
    new_tickets                integer          not null,
    customer_messages          integer          not null,
    agent_replies              integer          not null,
    first_response_p50_seconds double precision,
    first_response_p90_seconds double precision,
    solved                     integer          not null,
    closed                     integer          not null,
    reopened                   integer          not null,
    computed_at                timestamptz      not null default now(),
    primary key (day, tenant_id, origin_id)
);

-- Analysts: the same access as the other analytics tables (0500, 0501): supportflow_analyst reads
-- every tenant, supportflow_tenant_analyst only its tenants' rows. Raw tables stay private.
do $$
declare
    t text;
begin
    foreach t in array array['queue_counters', 'conversation_daily'] loop
        execute format('grant select on analytics.%I to supportflow_analyst', t);
        execute format('alter table analytics.%I enable row level security', t);
        execute format(
            'create policy analyst_all_tenants on analytics.%I for select'
            ' to supportflow_analyst using (true)', t);
        execute format(
            'create policy analyst_own_tenants on analytics.%I for select'
            ' to supportflow_tenant_analyst using (tenant_id in (select analytics.allowed_tenants()))',
            t);
        execute format('grant select on analytics.%I to supportflow_tenant_analyst', t);
    end loop;
end
$$;
