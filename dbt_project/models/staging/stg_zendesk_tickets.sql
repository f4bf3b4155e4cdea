-- One row per (desk, ticket) as last exported, with the metric set and satisfaction pulled out of
-- raw_data. Zendesk sideloads `metric_sets` separately; the collector keeps each ticket's one
-- under raw_data -> 'metric_set' (older rows may carry it as 'metric_sets' -> 0).
with tickets as (
    select * from {{ source('raw', 'zendesk_tickets') }}
),

metrics as (
    select
        t.*,
        coalesce(t.raw_data -> 'metric_set', t.raw_data -> 'metric_sets' -> 0) as metric_set
    from tickets as t
)

select
    desk_id::text || ':' || ticket_id::text as ticket_key,
    desk_id,
    ticket_id,
    tenant_id,
    status,
    subject,
    priority,
    ticket_type,
    requester_id,
    req_name as requester_name,
    assignee_id,
    assignee_name,
    group_id,
    group_name,
    organization_id,
    created_at,
    updated_at,
    coalesce(solved_at, (metric_set ->> 'solved_at')::timestamptz) as solved_at,
    coalesce(is_deleted, false) or status = 'deleted' as is_deleted,
    (metric_set -> 'reply_time_in_minutes' ->> 'calendar')::integer as first_reply_minutes,
    (metric_set -> 'reply_time_in_minutes' ->> 'business')::integer as first_reply_business_minutes,
    (metric_set -> 'full_resolution_time_in_minutes' ->> 'calendar')::integer
        as full_resolution_minutes,
    (metric_set -> 'full_resolution_time_in_minutes' ->> 'business')::integer
        as full_resolution_business_minutes,
    (metric_set ->> 'replies')::integer as replies,
    (metric_set ->> 'reopens')::integer as reopens,
    nullif(raw_data -> 'satisfaction_rating' ->> 'score', '') as satisfaction_score
from metrics
