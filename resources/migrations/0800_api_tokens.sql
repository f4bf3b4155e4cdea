-- Per-tenant tokens of the helpdesk read API (/api/v1/). Only a SHA-256 hash of each token is
-- kept: the token is shown once, when it is made. A revoked token stays for the audit trail.
create table control.api_tokens (
    token_id     bigint generated always as identity primary key,
    tenant_id    text        not null,
    name         text        not null,
    token_hash   text        not null unique,
    created_at   timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    unique (tenant_id, name)
);
