"""Conversations: channel messages -> threads -> tickets with a lifecycle -> work queues.

`rules.py` (message formats, state machine, closure rules, queue conditions; pure), `store.py`
(the SQL), `defs.py` (Dagster assets, checks, jobs and schedules).
"""
