-- Every state change of a conversation ticket with its cause, in the order it was recorded.
select
    change_id,
    tenant_id,
    ticket_id,
    from_state,
    to_state,
    cause,
    event_id,
    changed_at,
    (changed_at at time zone 'UTC')::date as changed_day,
    recorded_at,
    from_state = 'solved' and to_state = 'working' as is_reopen
from {{ source('raw', 'ticket_state_changes') }}
