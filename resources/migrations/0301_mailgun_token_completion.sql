-- A Mailgun token is claimed before its events are enqueued and completed after. A claim that
-- never completed (the process died in between) may be taken again by Mailgun's retry, so a
-- crash between the two steps cannot turn the retry into a "replay" and lose the events.
alter table control.mailgun_seen_tokens add column completed_at timestamptz;
update control.mailgun_seen_tokens set completed_at = seen_at;
