-- A ticket's visible_message_count (kept by the drains at every commit) equals a recount of its
-- live messages (neither shadowed nor removed). Rows returned are tickets where they differ.
select
    t.ticket_id,
    t.visible_message_count,
    count(m.message_id) as live_messages
from {{ ref('stg_conversation_tickets') }} as t
left join {{ ref('stg_conversation_messages') }} as m
    on m.ticket_id = t.ticket_id and m.is_live
group by t.ticket_id, t.visible_message_count
having t.visible_message_count <> count(m.message_id)
