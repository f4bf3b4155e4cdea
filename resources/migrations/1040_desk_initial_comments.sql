-- The initial sync of a desk's comments reads the oldest tickets' comments through the
-- per-ticket endpoint (the account-wide budget) while the ticket events export starts at
-- comments_split_at (see assets/tickets/store.py `sync_comments`). These columns let a killed
-- initial sync resume where it stopped; all three are null once it has finished.
alter table control.desks
    add column comments_split_at       bigint,  -- unix s: tickets created before it are read per ticket
    add column comments_backfill_after bigint,  -- ticket id: every ticket up to it has been read
    add column comments_gap_from       bigint;  -- unix s: events of [it, split) still to re-read
