select
    desk_id::text || ':' || user_id::text as user_key,
    desk_id,
    user_id,
    tenant_id,
    name,
    role,
    external_id
from {{ source('raw', 'zendesk_users') }}
