-- A ticket's visible_message_count (kept by the drains at every commit) equals a recount of its
-- live messages (neither shadowed nor removed). Rows returned are tickets where they differ.
-- It reads two models; meta.dagster.ref attaches it to the tickets' model as an asset check (else
-- dagster-dbt warns at every build that it cannot tell which asset the test checks).
{{ config(meta={"dagster": {"ref": {"name": "stg_conversation_tickets"}}}) }}
select
    t.ticket_id,
    t.visible_message_count,
    count(m.message_id) as live_messages
from {{ ref('stg_conversation_tickets') }} as t
left join {{ ref('stg_conversation_messages') }} as m
    on m.ticket_id = t.ticket_id and m.is_live
group by t.ticket_id, t.visible_message_count
having t.visible_message_count <> count(m.message_id)
