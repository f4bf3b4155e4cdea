-- A change sequence over the Zendesk tables other domains read incrementally (the feedback
-- source "zendesk"): every inserted comment and every inserted or updated ticket takes the next
-- number, so a reader keeps a cursor on it and a pull costs what changed, not what exists.
-- Readers bound a pull by the sequence's value while no writer is in flight (see
-- assets/tickets/rules.py `changes_bound`), so a transaction that commits late is never skipped.
create sequence raw.zendesk_change_seq;

alter table raw.zendesk_tickets
    add column change_seq bigint not null default nextval('raw.zendesk_change_seq');
alter table raw.zendesk_ticket_comments
    add column change_seq bigint not null default nextval('raw.zendesk_change_seq');

create index zendesk_tickets_change_seq on raw.zendesk_tickets (change_seq);
create index zendesk_ticket_comments_change_seq on raw.zendesk_ticket_comments (change_seq);
