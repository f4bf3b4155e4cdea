-- One row per live (not deleted) ticket with its people, times and comment counts.
with tickets as (
    select * from {{ ref('stg_zendesk_tickets') }}
    where not is_deleted
),

comment_counts as (
    select
        ticket_key,
        count(*) as comment_count,
        count(*) filter (where is_public) as public_comment_count,
        min(created_at) filter (where is_public) as first_public_comment_at,
        max(created_at) as last_comment_at
    from {{ ref('stg_zendesk_ticket_comments') }}
    group by ticket_key
)

select
    t.ticket_key,
    t.desk_id,
    t.ticket_id,
    t.status,
    t.subject,
    t.priority,
    t.ticket_type,
    t.requester_id,
    t.requester_name,
    t.assignee_id,
    t.assignee_name,
    t.group_id,
    t.group_name,
    t.organization_id,
    t.created_at,
    t.updated_at,
    t.solved_at,
    t.first_reply_minutes,
    t.first_reply_business_minutes,
    t.full_resolution_minutes,
    t.full_resolution_business_minutes,
    t.replies,
    t.reopens,
    t.satisfaction_score,
    coalesce(c.comment_count, 0) as comment_count,
    coalesce(c.public_comment_count, 0) as public_comment_count,
    c.last_comment_at
from tickets as t
left join comment_counts as c on c.ticket_key = t.ticket_key
