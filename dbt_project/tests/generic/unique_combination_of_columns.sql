{#
  The grain test: no two rows share the same values in `combination_of_columns`.
  (dbt_utils has one; dbt packages would need a download at `dbt deps`, so we keep this one.)
#}
{% test unique_combination_of_columns(model, combination_of_columns) %}
select {{ combination_of_columns | join(', ') }}, count(*) as n
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count(*) > 1
{% endtest %}
