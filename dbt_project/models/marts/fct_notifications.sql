-- One row per outbound email with its delivery outcome and the provider events received for it.
with notifications as (
    select * from {{ ref('stg_notifications') }}
),

events as (
    select
        notification_id,
        count(*) as delivery_event_count,
        max(occurred_at) as last_event_at,
        (array_agg(reason order by occurred_at desc) filter (where reason is not null))[1]
            as last_failure_reason
    from {{ ref('stg_delivery_events') }}
    where notification_id is not null
    group by notification_id
)

select
    n.notification_id,
    n.tenant_id,
    n.ticket_id,
    n.template_id,
    n.provider,
    n.status,
    n.status in ('sending', 'pending') as is_in_flight,
    n.status = 'delivered' as is_delivered,
    n.status in ('temporary-failure', 'permanent-failure', 'technical-failure') as is_failed,
    n.created_at,
    n.sent_at,
    n.status_updated_at,
    n.is_archived,
    extract(epoch from (n.status_updated_at - n.sent_at))::numeric(12, 1)
        as seconds_to_outcome,
    coalesce(e.delivery_event_count, 0) as delivery_event_count,
    e.last_event_at,
    case when n.status <> 'delivered' then e.last_failure_reason end as failure_reason
from notifications as n
left join events as e on e.notification_id = n.notification_id
