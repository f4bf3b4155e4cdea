{#
  Use a model's custom schema as the schema name itself: marts land in `analytics`, staging views
  in `staging` (dbt's default would concatenate them into `analytics_analytics`).
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
