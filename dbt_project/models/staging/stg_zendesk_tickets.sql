-- One row per (desk, ticket) as last exported, with the metric set and satisfaction pulled out of
-- raw_data. Zendesk sideloads `metric_sets` separately; the collector keeps each ticket's one in
-- the column metric_set (rows written another way may carry it in raw_data).
with tickets as (
    select * from {{ source('raw', 'zendesk_tickets') }}
),

metrics as (
    select
        t.*,
        coalesce(t.metric_set, t.raw_data -> 'metric_set', t.raw_data -> 'metric_sets' -> 0)
            as ticket_metrics
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
    coalesce(solved_at, (ticket_metrics ->> 'solved_at')::timestamptz) as solved_at,
    coalesce(is_deleted, false) or status = 'deleted' as is_deleted,
    (ticket_metrics -> 'reply_time_in_minutes' ->> 'calendar')::integer as first_reply_minutes,
    (ticket_metrics -> 'reply_time_in_minutes' ->> 'business')::integer as first_reply_business_minutes,
    (ticket_metrics -> 'full_resolution_time_in_minutes' ->> 'calendar')::integer
        as full_resolution_minutes,
    (ticket_metrics -> 'full_resolution_time_in_minutes' ->> 'business')::integer
        as full_resolution_business_minutes,
    (ticket_metrics ->> 'replies')::integer as replies,
    (ticket_metrics ->> 'reopens')::integer as reopens,
    nullif(raw_data -> 'satisfaction_rating' ->> 'score', '') as satisfaction_score
from metrics
