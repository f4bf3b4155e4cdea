-- One row per live (not deleted) ticket with its people, times and comment counts.
-- First reply and full resolution come from Zendesk's metric set; where the set has no value yet
-- (e.g. an account without SLA metrics) they are derived: the first public comment by someone
-- other than the requester, and created -> solved for solved and closed tickets.
with tickets as (
    select * from {{ ref('stg_zendesk_tickets') }}
    where not is_deleted
),

comments as (
    select c.*, t.requester_id
    from {{ ref('stg_zendesk_ticket_comments') }} as c
    inner join tickets as t on t.ticket_key = c.ticket_key
),

comment_counts as (
    select
        ticket_key,
        count(*) as comment_count,
        count(*) filter (where is_public) as public_comment_count,
        min(created_at) filter (where is_public and author_id is distinct from requester_id)
            as first_reply_at,
        max(created_at) as last_comment_at
    from comments
    group by ticket_key
)

select
    t.ticket_key,
    t.desk_id,
    t.tenant_id,
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
    coalesce(
        t.first_reply_minutes,
        floor(extract(epoch from (c.first_reply_at - t.created_at)) / 60)::integer
    ) as first_reply_minutes,
    t.first_reply_business_minutes,
    coalesce(
        t.full_resolution_minutes,
        case
            when t.status in ('solved', 'closed')
                then floor(extract(epoch from (t.solved_at - t.created_at)) / 60)::integer
        end
    ) as full_resolution_minutes,
    t.full_resolution_business_minutes,
    t.replies,
    t.reopens,
    t.satisfaction_score,
    coalesce(c.comment_count, 0) as comment_count,
    coalesce(c.public_comment_count, 0) as public_comment_count,
    c.last_comment_at
from tickets as t
left join comment_counts as c on c.ticket_key = t.ticket_key
