-- Per workspace, day and source: feedback volume and sentiment.
select
    tenant_id,
    workspace_id,
    feedback_day,
    source,
    count(*) as items,
    count(*) filter (where sentiment_label = 'positive') as positive,
    count(*) filter (where sentiment_label = 'neutral') as neutral,
    count(*) filter (where sentiment_label = 'negative') as negative,
    round(avg(sentiment_score)::numeric, 4) as avg_sentiment,
    count(distinct language) as languages
from {{ ref('stg_feedback_items') }}
group by tenant_id, workspace_id, feedback_day, source
