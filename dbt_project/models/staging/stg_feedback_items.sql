select
    item_id,
    workspace_id,
    tenant_id,
    source,
    source_id,
    external_id,
    language,
    text,
    rating,
    created_at,
    (created_at at time zone 'UTC')::date as feedback_day,
    sentiment_label,
    sentiment_score,
    topics
from {{ source('raw', 'feedback_items') }}
