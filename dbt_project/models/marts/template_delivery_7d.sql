-- Per tenant and template, "the last 7 days plus today": every notification sent from the
-- start of the same weekday last week through now, so on a Monday it counts back to last Monday
-- inclusive. Days are those of the email statistics (SUPPORTFLOW_EMAIL_TIMEZONE, default UTC),
-- the same as analytics.template_stats_daily. "Now" is the build's time, or the `as_of` var
-- (an ISO timestamp with offset) so a build can be repeated for a given moment.
{% set zone = env_var('SUPPORTFLOW_EMAIL_TIMEZONE', 'UTC') | replace("'", "") %}
{% set as_of = var('as_of', none) %}
{% set now = ("'" ~ (as_of | replace("'", "")) ~ "'::timestamptz") if as_of else 'current_timestamp' %}

with window_notifications as (
    select *
    from {{ ref('stg_notifications') }}
    where sent_at <= {{ now }}
        and sent_at >= (({{ now }} at time zone '{{ zone }}')::date - 7)::timestamp
        at time zone '{{ zone }}'
)

select
    tenant_id,
    template_id,
    count(*) as sent,
    count(*) filter (where status = 'delivered') as delivered,
    count(*) filter (where status = 'temporary-failure') as temporary_failures,
    count(*) filter (where status = 'permanent-failure') as permanent_failures,
    count(*) filter (where status = 'technical-failure') as technical_failures,
    count(*) filter (where status in ('sending', 'pending')) as in_flight,
    round(count(*) filter (where status = 'delivered')::numeric / count(*), 4) as delivery_rate,
    min(sent_at) as first_sent_at,
    max(sent_at) as last_sent_at
from window_notifications
group by tenant_id, template_id
