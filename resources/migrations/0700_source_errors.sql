-- A feedback source that fails is pulled, committed and failed on its own: its last error
-- shows in `supportflow sources list` until a pull succeeds again.
alter table control.feedback_sources
    add column last_error    text,
    add column last_error_at timestamptz,
    add column failed_pulls  integer not null default 0;  -- consecutive failed pulls
