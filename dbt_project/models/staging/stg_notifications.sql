-- Every outbound email: the live rows (raw.notifications) and those past retention, which keep
-- their outcome without personal data (raw.notification_history). The recipient is left out on
-- purpose: analysts get outcomes, not addresses. A row briefly in both tables counts once.
with live as (
    select
        notification_id, tenant_id, ticket_id, template_id, provider, provider_reference, status,
        created_at, sent_at, status_updated_at, false as is_archived
    from {{ source('raw', 'notifications') }}
),

archived as (
    select
        notification_id, tenant_id, ticket_id, template_id, provider, provider_reference, status,
        created_at, sent_at, status_updated_at, true as is_archived
    from {{ source('raw', 'notification_history') }}
    where notification_id not in (select notification_id from live)
)

select * from live
union all
select * from archived
