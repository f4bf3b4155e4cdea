-- Ticket activities: raw.activities, range-partitioned by UTC day on occurred_at.
--
-- Idempotency. A primary key on a partitioned table must include the partition key, so
-- (activity_id, occurred_at) alone would accept the same activity_id twice if a producer ever
-- re-sent it with another occurred_at. raw.activity_ids is a small, unpartitioned ledger keyed on
-- activity_id alone: an insert first claims the id there (ON CONFLICT DO NOTHING) and only the
-- claimed ids reach raw.activities, so a repeated id has no second effect whatever its timestamp,
-- and two concurrent writers of one id serialise on the ledger's unique index. The ledger keeps
-- ids of deleted tickets too: a redelivered activity of a destroyed ticket does not come back.
-- Retention prunes the ledger together with the partitions it drops.

create table raw.activities (
    activity_id  text        not null check (activity_id <> ''),
    occurred_at  timestamptz not null,
    tenant_id    text        not null,
    ticket_id    bigint      not null,
    actor_type   text        not null check (actor_type in ('user', 'system')),
    actor_id     text        not null,
    action       text        not null,
    -- the dashboard category: user activities only (derived from the action)
    category     text check ((actor_type = 'user') = (category is not null)),
    details      jsonb       not null default '{}'::jsonb,
    received_at  timestamptz not null default now(),
    primary key (activity_id, occurred_at)
) partition by range (occurred_at);

-- a ticket's timeline, in order
create index activities_ticket_timeline
    on raw.activities (tenant_id, ticket_id, occurred_at, activity_id);
-- a tenant's day (each partition is one day; this orders and filters within it)
create index activities_tenant_day on raw.activities (tenant_id, occurred_at);

create table raw.activity_ids (
    activity_id text        primary key,
    occurred_at timestamptz not null,
    recorded_at timestamptz not null default now()
);
create index activity_ids_occurred_at on raw.activity_ids (occurred_at);

-- tickets destroyed (queue activity_deletes): activities arriving later for them are not stored,
-- because the two queues do not order messages between each other
create table raw.activity_deleted_tickets (
    tenant_id  text        not null,
    ticket_id  bigint      not null,
    deleted_at timestamptz not null default now(),
    primary key (tenant_id, ticket_id)
);

-- The partition of one UTC day, created when missing. Partitions are named
-- raw.activities_pYYYYMMDD; maintenance and retention rely on that name. An advisory lock per day
-- serialises concurrent creators (CREATE TABLE IF NOT EXISTS alone still races on the catalog).
create function raw.ensure_activity_partition(day date) returns boolean
language plpgsql as $$
declare
    part text := 'activities_p' || to_char(day, 'YYYYMMDD');
begin
    if to_regclass(format('raw.%I', part)) is not null then
        return false;
    end if;
    perform pg_advisory_xact_lock(727200, day - date '2000-01-01');
    if to_regclass(format('raw.%I', part)) is not null then
        return false;
    end if;
    execute format(
        'create table raw.%I partition of raw.activities for values from (%L) to (%L)',
        part,
        to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00',
        to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00'
    );
    return true;
end
$$;

select raw.ensure_activity_partition((now() at time zone 'UTC')::date + offs)
from generate_series(0, 3) as offs;
