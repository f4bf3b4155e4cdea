-- One row per conversation ticket: where it came from, its lifecycle, how fast it was answered,
-- what was written in it and how the customer felt. Message counts are of live messages (neither
-- shadowed nor removed), as the platform counts them; hidden (moderated) messages still count.
with tickets as (
    select * from {{ ref('stg_conversation_tickets') }}
),

message_counts as (
    select
        ticket_id,
        count(*) filter (where is_live and kind = 'customer') as customer_messages,
        count(*) filter (where is_live and kind = 'agent_reply') as agent_replies,
        count(*) filter (where is_live and kind = 'private_note') as private_notes,
        count(*) filter (where is_live and kind = 'ai_message') as ai_messages,
        count(*) filter (where is_live and kind = 'ai_suggestion') as ai_suggestions,
        count(*) filter (where deleted) as removed_messages,
        count(*) filter (where is_live and hidden) as hidden_messages,
        coalesce(sum(attachment_count) filter (where is_live), 0) as attachments,
        max(sent_at) filter (where is_live) as last_message_at
    from {{ ref('stg_conversation_messages') }}
    where ticket_id is not null
    group by ticket_id
),

state_changes as (
    select
        ticket_id,
        count(*) as state_changes,
        count(*) filter (where is_reopen) as reopen_count,
        count(*) filter (where to_state = 'solved') as times_solved,
        count(*) filter (where cause = 'schedule') as scheduled_changes
    from {{ ref('stg_ticket_state_changes') }}
    group by ticket_id
)

select
    t.ticket_id,
    t.ticket_key,
    t.tenant_id,
    t.sequence,
    t.thread_id,
    t.origin_id,
    t.channel,
    t.customer_external_id,
    t.state,
    t.is_active,
    t.priority,
    t.owner_agent,
    t.owner_group,
    t.tags,
    t.topic,
    t.language,
    t.created_at,
    t.created_day,
    t.first_customer_message_at,
    t.first_response_at,
    extract(epoch from (t.first_response_at - coalesce(t.first_customer_message_at, t.created_at)))
        ::bigint as first_response_seconds,
    t.solved_at,
    case
        when t.solved_at is not null
            then extract(epoch from (t.solved_at - t.created_at))::bigint
    end as resolution_seconds,
    t.closed_at,
    t.followup_until,
    t.escalated_at,
    t.last_customer_message_at,
    m.last_message_at,
    t.updated_at,
    t.visible_message_count,
    coalesce(m.customer_messages, 0) as customer_messages,
    coalesce(m.agent_replies, 0) as agent_replies,
    coalesce(m.private_notes, 0) as private_notes,
    coalesce(m.ai_messages, 0) as ai_messages,
    coalesce(m.ai_suggestions, 0) as ai_suggestions,
    coalesce(m.removed_messages, 0) as removed_messages,
    coalesce(m.hidden_messages, 0) as hidden_messages,
    coalesce(m.attachments, 0) as attachments,
    coalesce(s.state_changes, 0) as state_changes,
    coalesce(s.reopen_count, 0) as reopen_count,
    coalesce(s.times_solved, 0) as times_solved,
    coalesce(s.scheduled_changes, 0) as scheduled_changes,
    t.star_rating,
    t.sentiment_label,
    t.sentiment_score
from tickets as t
left join message_counts as m on m.ticket_id = t.ticket_id
left join state_changes as s on s.ticket_id = t.ticket_id
