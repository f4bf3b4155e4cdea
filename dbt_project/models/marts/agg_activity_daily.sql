-- Per tenant, day and dashboard category: how many activities users and automation made.
-- Only user activities carry a dashboard category; system ones count under 'system'.
select
    tenant_id,
    activity_day,
    coalesce(category, case when actor_type = 'system' then 'system' else 'uncategorized' end)
        as category,
    count(*) filter (where actor_type = 'user') as user_activities,
    count(*) filter (where actor_type = 'system') as system_activities,
    count(*) as total_activities
from {{ ref('stg_activities') }}
group by 1, 2, 3
