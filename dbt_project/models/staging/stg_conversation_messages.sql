-- One row per stored channel message (per tenant and channel message id), with its UTC day.
-- `is_live`: neither shadowed (its origin was disabled) nor removed, what every count counts.
select
    tenant_id,
    message_id,
    tenant_id || ':' || message_id as message_key,
    ticket_id,
    thread_id,
    origin_id,
    kind,
    author_external_id,
    author_name,
    text,
    attachments,
    jsonb_array_length(attachments) as attachment_count,
    rating,
    sentiment_score,
    sent_at,
    (sent_at at time zone 'UTC')::date as sent_day,
    received_at,
    deleted,
    hidden,
    shadowed,
    not shadowed and not deleted as is_live,
    deleted_at
from {{ source('raw', 'conversation_messages') }}
