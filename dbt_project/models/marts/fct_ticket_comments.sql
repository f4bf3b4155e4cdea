-- One row per comment on a live ticket, with the author's role and its position in the thread.
with comments as (
    select * from {{ ref('stg_zendesk_ticket_comments') }}
),

live_tickets as (
    select ticket_key from {{ ref('stg_zendesk_tickets') }} where not is_deleted
),

users as (
    select * from {{ ref('stg_zendesk_users') }}
)

select
    c.comment_key,
    c.ticket_key,
    c.desk_id,
    c.tenant_id,
    c.comment_id,
    c.ticket_id,
    c.author_id,
    u.name as author_name,
    coalesce(u.role, 'unknown') as author_role,
    c.is_public,
    c.body,
    length(c.body) as body_length,
    c.created_at,
    row_number() over (partition by c.ticket_key order by c.created_at, c.comment_id)
        as position_in_ticket
from comments as c
inner join live_tickets as t on t.ticket_key = c.ticket_key
left join users as u on u.desk_id = c.desk_id and u.user_id = c.author_id
