-- Analyst access: supportflow_analyst, a NOLOGIN role that reads the analytics schema and nothing
-- else. Grant it to a login role per person or BI tool (see README "For analysts"):
--     create role alice login password '...' in role supportflow_analyst;
-- Roles are cluster-wide, so another database on the same server may have created it already.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'supportflow_analyst') then
        begin
            create role supportflow_analyst nologin;
        exception when duplicate_object or unique_violation then
            null;  -- created concurrently from another database
        end;
    end if;
    execute format('grant connect on database %I to supportflow_analyst', current_database());
end
$$;

grant usage on schema analytics to supportflow_analyst;
grant select on all tables in schema analytics to supportflow_analyst;
-- Tables created later in analytics by this role (the dbt marts, rebuilt on every run, and tables
-- of later migrations) are readable too. dbt must connect as the user that runs migrations; a
-- different dbt user needs the same statement with `for role <dbt user>`.
alter default privileges in schema analytics grant select on tables to supportflow_analyst;
