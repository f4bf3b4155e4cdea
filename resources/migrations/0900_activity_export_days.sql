-- What the daily activity export last wrote, per day, and whether the day changed since: a late
-- activity or a ticket delete for a day already exported marks it, and a sensor re-exports it.
create table control.activity_export_days (
    day         date        primary key,
    exported_at timestamptz,                    -- start of the last export's transaction
    changed_at  timestamptz,                    -- last change to the day's user activities
    tenants     text[]      not null default '{}'  -- tenants with files from the last export
);
