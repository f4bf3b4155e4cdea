-- Verified input the platform refused for good (a webhook whose signature held but whose content
-- PostgreSQL jsonb cannot store, a field of the wrong type, a message over the queue limit):
-- kept byte for byte, with the reason, for inspection. bytea, because jsonb (and SQS) cannot
-- hold what was refused. It may carry personal data: pruned with the queue ledger.
create table control.rejected_input (
    rejected_id bigint generated always as identity primary key,
    received_at timestamptz not null default now(),
    source      text        not null,  -- the endpoint, e.g. /webhooks/mailgun
    queue       text,                  -- where it was meant to go, when known
    reason      text        not null,
    body_sha256 text        not null,
    body        bytea       not null
);
create index rejected_input_received_at on control.rejected_input (received_at);
