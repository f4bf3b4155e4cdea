-- When each day's feedback last changed and when its insight reports were last written. Enrichment
-- marks the UTC days of the items it inserted or changed (an edited Discourse post, a late
-- item); a report reads its day and the days before it, so a day is reported again when a day it
-- reads changed after its report (a sensor requests exactly those partitions).
create table control.insight_report_days (
    day         date        primary key,
    reported_at timestamptz,  -- start of the last report's transaction for this day
    changed_at  timestamptz   -- last change to enriched items created on this day
);
