-- Per UTC day, tenant and origin: the daily conversation figures the Dagster asset
-- `conversation_daily` computes per partition (analytics.conversation_daily: new tickets, customer
-- messages, agent replies, first-response p50/p90, solved, closed, reopened), next to what the
-- messages themselves say that day (customers writing, notes, the AI's share, ratings,
-- sentiment). A day the asset has not computed yet (a partition still to backfill) has the
-- message figures and null asset figures, with `figures_computed` false.
with daily as (
    select * from {{ source('analytics', 'conversation_daily') }}
),

messages as (
    select
        m.tenant_id,
        m.origin_id,
        m.sent_day as day,
        count(distinct m.author_external_id) filter (where m.kind = 'customer')
            as customers_writing,
        count(*) filter (where m.kind = 'customer') as live_customer_messages,
        count(*) filter (where m.kind = 'private_note') as private_notes,
        count(*) filter (where m.kind = 'ai_message') as ai_messages,
        count(*) filter (where m.kind = 'ai_suggestion') as ai_suggestions,
        count(*) filter (where m.rating is not null) as ratings,
        round(avg(m.rating)::numeric, 2) as avg_rating,
        round(avg(m.sentiment_score) filter (where m.kind = 'customer')::numeric, 4)
            as avg_customer_sentiment
    from {{ ref('stg_conversation_messages') }} as m
    where m.is_live
    group by m.tenant_id, m.origin_id, m.sent_day
),

origins as (
    select distinct on (origin_id) origin_id, channel
    from {{ ref('stg_conversation_tickets') }}
    order by origin_id, created_at desc
),

grain as (
    select tenant_id, origin_id, day from daily
    union
    select tenant_id, origin_id, day from messages
)

select
    g.day,
    g.tenant_id,
    g.origin_id,
    d.origin_name,
    coalesce(d.channel, o.channel) as channel,
    d.tenant_id is not null as figures_computed,
    d.new_tickets,
    d.customer_messages,
    d.agent_replies,
    d.first_response_p50_seconds,
    d.first_response_p90_seconds,
    d.solved,
    d.closed,
    d.reopened,
    coalesce(m.customers_writing, 0) as customers_writing,
    coalesce(m.live_customer_messages, 0) as live_customer_messages,
    coalesce(m.private_notes, 0) as private_notes,
    coalesce(m.ai_messages, 0) as ai_messages,
    coalesce(m.ai_suggestions, 0) as ai_suggestions,
    coalesce(m.ratings, 0) as ratings,
    m.avg_rating,
    m.avg_customer_sentiment,
    d.computed_at as figures_computed_at
from grain as g
left join daily as d
    on d.tenant_id = g.tenant_id and d.origin_id = g.origin_id and d.day = g.day
left join messages as m
    on m.tenant_id = g.tenant_id and m.origin_id = g.origin_id and m.day = g.day
left join origins as o on o.origin_id = g.origin_id
