select
    delivery_event_id,
    provider,
    provider_event_id,
    provider_reference,
    tenant_id,
    notification_id,
    event_type,
    outcome,
    severity,
    reason,
    orphan as is_orphan,
    occurred_at
from {{ source('raw', 'delivery_events') }}
