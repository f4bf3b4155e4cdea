-- The ticket's sideloaded metric set (reply and resolution times, reopens ...), as Zendesk sent it.
alter table raw.zendesk_tickets add column metric_set jsonb;
