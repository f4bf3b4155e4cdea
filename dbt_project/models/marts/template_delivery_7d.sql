-- Per tenant and template, "the last 7 days plus today": every notification created from the same
-- weekday last week (UTC) through now, so on a Monday it counts back to last Monday inclusive.
with window_notifications as (
    select *
    from {{ ref('stg_notifications') }}
    where created_at >= ((current_timestamp at time zone 'UTC')::date - 7)::timestamp at time zone 'UTC'
)

select
    tenant_id,
    template_id,
    count(*) as sent,
    count(*) filter (where status = 'delivered') as delivered,
    count(*) filter (where status = 'temporary-failure') as temporary_failures,
    count(*) filter (where status = 'permanent-failure') as permanent_failures,
    count(*) filter (where status = 'technical-failure') as technical_failures,
    count(*) filter (where status in ('sending', 'pending')) as in_flight,
    round(count(*) filter (where status = 'delivered')::numeric / count(*), 4) as delivery_rate,
    min(created_at) as first_sent_at,
    max(created_at) as last_sent_at
from window_notifications
group by tenant_id, template_id
