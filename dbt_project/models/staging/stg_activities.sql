select
    activity_id,
    tenant_id,
    ticket_id,
    actor_type,
    actor_id,
    action,
    category,
    occurred_at,
    (occurred_at at time zone 'UTC')::date as activity_day
from {{ source('raw', 'activities') }}
