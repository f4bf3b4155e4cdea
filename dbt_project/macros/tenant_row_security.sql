{#
  Post-hook of every mart (dbt_project.yml): row-level security so supportflow_tenant_analyst
  sees only its tenants' rows (analytics.allowed_tenants(), migration 0501), supportflow_analyst
  every row. dbt creates a new table on each build, so the policies come with every build.
  The table's owner (the pipelines' user) is not subject to them.
#}
{% macro tenant_row_security() %}
    alter table {{ this }} enable row level security;
    create policy analyst_all_tenants on {{ this }} for select
        to supportflow_analyst using (true);
    create policy analyst_own_tenants on {{ this }} for select
        to supportflow_tenant_analyst using (tenant_id in (select analytics.allowed_tenants()));
    grant select on {{ this }} to supportflow_tenant_analyst
{% endmacro %}
