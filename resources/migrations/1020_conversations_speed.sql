-- The conversations drain keeps a ticket's derived properties incrementally: a message newer than
-- everything its ticket holds is folded into them, and only a ticket given an older message, a
-- removed one or an event is aggregated again from its messages. The mean sentiment needs its
-- sum and count for that (sentiment_score = sentiment_sum / sentiment_count).
alter table raw.conversation_tickets
    add column sentiment_sum   double precision not null default 0,
    add column sentiment_count integer          not null default 0 check (sentiment_count >= 0);

update raw.conversation_tickets t
set sentiment_sum = s.total, sentiment_count = s.scored
from (
    select ticket_id, sum(sentiment_score) as total, count(sentiment_score) as scored
    from raw.conversation_messages
    where kind = 'customer' and not deleted and not shadowed and ticket_id is not null
    group by ticket_id
) s
where t.ticket_id = s.ticket_id and s.scored > 0;

-- Nothing reads messages by thread (a thread's messages are read through its tickets, shadowed
-- ones through conversation_messages_shadowed); the index cost every stored message an insert.
drop index raw.conversation_messages_thread;
