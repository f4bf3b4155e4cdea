select
    desk_id::text || ':' || comment_id::text as comment_key,
    desk_id::text || ':' || ticket_id::text as ticket_key,
    desk_id,
    tenant_id,
    comment_id,
    ticket_id,
    author_id,
    public as is_public,
    body,
    created_at
from {{ source('raw', 'zendesk_ticket_comments') }}
