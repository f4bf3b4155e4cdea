-- Notifications counted per tenant, UTC hour of sending, template and current status, over
-- raw.notifications and raw.notification_history together (what a recount of a day counts), so
-- today's template statistics read about 24 x templates x statuses rows of a tenant instead of
-- the day's notifications.
--
-- Triggers on both tables append every change, aggregated per statement, to
-- raw.notification_count_changes: insert-only, so the drains, retention and anyone else writing
-- notifications never wait on each other's counters or deadlock on them. Folding the changes into
-- raw.notification_counts is a separate step, one folder at a time
-- (raw.fold_notification_count_changes, called by the drains in their own transactions); a
-- reader adds counts and pending changes in one statement, so a fold is never seen half-done.
-- Hours in UTC make the counts independent of the configured zone: a day in a zone whose
-- midnight is not on a UTC hour takes its partial first and last hours from the notifications.

create table raw.notification_counts (
    tenant_id          text        not null,
    sent_hour          timestamptz not null,
    template_id        text        not null,
    status             text        not null,
    notification_count bigint      not null,
    primary key (tenant_id, sent_hour, template_id, status)
);

create table raw.notification_count_changes (
    change_id   bigint generated always as identity primary key,
    tenant_id   text        not null,
    sent_hour   timestamptz not null,
    template_id text        not null,
    status      text        not null,
    delta       bigint      not null
);
create index notification_count_changes_tenant
    on raw.notification_count_changes (tenant_id, sent_hour);

create function raw.notification_hour(sent_at timestamptz) returns timestamptz
    language sql immutable parallel safe
    return date_bin('1 hour', sent_at, timestamptz '2000-01-01 00:00:00+00');

-- count again from the notifications (the migration; TRUNCATE, which fires no delete trigger)
create function raw.recount_notification_counts() returns void
    language sql as $$
    truncate raw.notification_counts, raw.notification_count_changes;
    insert into raw.notification_counts
        (tenant_id, sent_hour, template_id, status, notification_count)
    select tenant_id, raw.notification_hour(sent_at), template_id, status, count(*)
    from (
        select tenant_id, sent_at, template_id, status from raw.notifications
        union all
        select tenant_id, sent_at, template_id, status from raw.notification_history
    ) n
    group by 1, 2, 3, 4;
$$;

-- One statement's changes, aggregated: +1 a new row, -1 an old one. Old and new rows of an
-- update are not paired: a key the update did not change adds -1 and +1, and is left out.
create function raw.count_notification_changes() returns trigger
    language plpgsql as $$
begin
    if tg_op = 'TRUNCATE' then
        perform raw.recount_notification_counts();
    elsif tg_op = 'INSERT' then
        insert into raw.notification_count_changes
            (tenant_id, sent_hour, template_id, status, delta)
        select tenant_id, raw.notification_hour(sent_at), template_id, status, count(*)
        from new_rows
        group by 1, 2, 3, 4;
    elsif tg_op = 'DELETE' then
        insert into raw.notification_count_changes
            (tenant_id, sent_hour, template_id, status, delta)
        select tenant_id, raw.notification_hour(sent_at), template_id, status, -count(*)
        from old_rows
        group by 1, 2, 3, 4;
    else
        insert into raw.notification_count_changes
            (tenant_id, sent_hour, template_id, status, delta)
        select tenant_id, sent_hour, template_id, status, sum(delta)
        from (
            select tenant_id, raw.notification_hour(sent_at) as sent_hour, template_id, status,
                   -1 as delta
            from old_rows
            union all
            select tenant_id, raw.notification_hour(sent_at), template_id, status, 1
            from new_rows
        ) c
        group by 1, 2, 3, 4
        having sum(delta) <> 0;
    end if;
    return null;
end
$$;

-- Fold the committed changes into the counts; 0 without waiting when another fold holds the
-- lock (its changes are folded by the next). Returns the changes folded.
create function raw.fold_notification_count_changes() returns bigint
    language plpgsql as $$
declare
    folded bigint;
begin
    if not pg_try_advisory_xact_lock(hashtextextended('raw.notification_counts', 302)) then
        return 0;
    end if;
    with moved as (
        delete from raw.notification_count_changes
        returning tenant_id, sent_hour, template_id, status, delta
    ), summed as (
        select tenant_id, sent_hour, template_id, status, sum(delta) as delta, count(*) as changes
        from moved
        group by 1, 2, 3, 4
    ), upserted as (
        insert into raw.notification_counts as c
            (tenant_id, sent_hour, template_id, status, notification_count)
        select tenant_id, sent_hour, template_id, status, delta
        from summed
        where delta <> 0
        order by 1, 2, 3, 4
        on conflict (tenant_id, sent_hour, template_id, status) do update
            set notification_count = c.notification_count + excluded.notification_count
    )
    select coalesce(sum(changes), 0) into folded from summed;
    return folded;
end
$$;

do $$
declare
    t text;
begin
    foreach t in array array['notifications', 'notification_history'] loop
        execute format(
            'create trigger %1$s_counted_insert after insert on raw.%1$I'
            ' referencing new table as new_rows'
            ' for each statement execute function raw.count_notification_changes()', t);
        execute format(
            'create trigger %1$s_counted_update after update on raw.%1$I'
            ' referencing old table as old_rows new table as new_rows'
            ' for each statement execute function raw.count_notification_changes()', t);
        execute format(
            'create trigger %1$s_counted_delete after delete on raw.%1$I'
            ' referencing old table as old_rows'
            ' for each statement execute function raw.count_notification_changes()', t);
        execute format(
            'create trigger %1$s_counted_truncate after truncate on raw.%1$I'
            ' for each statement execute function raw.count_notification_changes()', t);
    end loop;
end
$$;

-- what is there already (the triggers exist from here on, in this same transaction)
select raw.recount_notification_counts();
