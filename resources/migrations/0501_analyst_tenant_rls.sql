-- Per-tenant analyst access: supportflow_tenant_analyst (NOLOGIN) reads the analytics tables
-- through row-level security, seeing only the rows of the tenants mapped to the login role (or to
-- a group role it belongs to) in control.analyst_tenants:
--     create role acme_bi login password '...' in role supportflow_tenant_analyst;
--     insert into control.analyst_tenants (role_name, tenant_id) values ('acme_bi', 'acme');
-- supportflow_analyst keeps seeing every tenant. A table is readable by tenant analysts only once
-- it has these policies: dbt's marts get them in a post-hook (macro tenant_row_security), the
-- tables below here; a new table stays invisible to them until someone adds its policy.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'supportflow_tenant_analyst') then
        begin
            create role supportflow_tenant_analyst nologin;
        exception when duplicate_object or unique_violation then
            null;  -- created concurrently from another database
        end;
    end if;
    execute format('grant connect on database %I to supportflow_tenant_analyst', current_database());
end
$$;

create table control.analyst_tenants (
    role_name  text        not null,
    tenant_id  text        not null,
    granted_at timestamptz not null default now(),
    primary key (role_name, tenant_id)
);

-- The tenants the session's login role may see. SECURITY DEFINER so analysts need no access to
-- control; it answers only for the session user, so nobody learns another role's tenants.
create function analytics.allowed_tenants() returns setof text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select a.tenant_id
    from control.analyst_tenants as a
    join pg_roles as r on r.rolname = a.role_name
    where pg_has_role(session_user, r.oid, 'MEMBER')
$$;
revoke all on function analytics.allowed_tenants() from public;
grant execute on function analytics.allowed_tenants() to supportflow_tenant_analyst;

grant usage on schema analytics to supportflow_tenant_analyst;

do $$
declare
    t text;
begin
    foreach t in array array['template_stats_daily', 'insight_reports'] loop
        execute format('alter table analytics.%I enable row level security', t);
        execute format(
            'create policy analyst_all_tenants on analytics.%I for select'
            ' to supportflow_analyst using (true)', t);
        execute format(
            'create policy analyst_own_tenants on analytics.%I for select'
            ' to supportflow_tenant_analyst using (tenant_id in (select analytics.allowed_tenants()))',
            t);
        execute format('grant select on analytics.%I to supportflow_tenant_analyst', t);
    end loop;
end
$$;
