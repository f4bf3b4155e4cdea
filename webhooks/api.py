"""The helpdesk's read API, `/api/v1/`: what the platform keeps, for the helpdesk's own pages.

Authenticated per tenant (`Authorization: Bearer <token>` from `supportflow api-tokens add`);
every query is bound to the token's tenant, and another tenant's ticket or workspace answers the
same 404 as one that does not exist. Errors are JSON `{"error": {"code", "message"}}`. The
OpenAPI description is served at `/api/v1/openapi.json`, built from the endpoints' docstrings.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from assets.activities.store import ticket_timeline_page
from assets.conversations.store import queue_counts, show_ticket
from assets.email.store import template_stats
from assets.feedback.store import WorkspaceError, get_workspace, latest_reports
from resources.api_tokens import tenant_for_token
from webhooks.service import WebhookService

PREFIX = "/api/v1"
MAX_PAGE = 500
DEFAULT_PAGE = 100

SCHEMAS = SchemaGenerator(
    {
        "openapi": "3.0.3",
        "info": {"title": "supportflow helpdesk read API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(
        {"error": {"code": exc.code, "message": exc.message}},
        status_code=exc.status,
        headers=headers,
    )


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_parameter", f"{name} must be between {low} and {high}")
    return value


def encode_cursor(occurred_at: datetime, activity_id: str) -> str:
    raw = json.dumps([occurred_at.isoformat(), activity_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, activity_id = json.loads(raw)
        return datetime.fromisoformat(when), str(activity_id)
    except (binascii.Error, ValueError, TypeError):
        raise ApiError(400, "bad_parameter", "cursor is not one this API gave out") from None


def _jsonable(value: Any) -> Any:
    """Rows as JSON: times in ISO 8601, decimals as numbers, bytes never (none are served)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _activity(entry: Any) -> dict[str, Any]:
    return {
        "activity_id": entry.activity_id,
        "occurred_at": entry.occurred_at.astimezone(UTC).isoformat(),
        "actor_type": entry.actor_type,
        "actor_id": entry.actor_id,
        "action": entry.action,
        "category": entry.category,
        "details": entry.details,
    }


def routes(service: WebhookService) -> list[Route]:
    """The read API's routes (a route provider of the webhook service)."""

    def connection(request: Request) -> contextlib.AbstractContextManager[psycopg.Connection]:
        """The request's one warehouse connection and transaction (opened on first use, committed
        when the endpoint ends): the token lookup and the endpoint's reads share it."""
        opened = request.state.opened
        if not opened:
            conn = request.state.stack.enter_context(service.warehouse.connection())
            # the token lookup stamps its last_used_at: bookkeeping, not a check, so the
            # request does not wait for that write to reach the disk
            conn.execute("set local synchronous_commit = off")
            opened.append(conn)
        return contextlib.nullcontext(opened[0])

    def tenant_of(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "missing bearer token")
        with connection(request) as conn:
            tenant = tenant_for_token(conn, token.strip())
        if tenant is None:
            raise ApiError(401, "unauthorized", "invalid or revoked token")
        return tenant

    def endpoint(handler):
        def run(request: Request) -> dict[str, Any] | ApiError:
            with contextlib.ExitStack() as stack:
                request.state.stack, request.state.opened = stack, []
                try:
                    return handler(request)
                except ApiError as exc:  # answered, and the token's stamp committed
                    return exc

        async def wrapped(request: Request) -> JSONResponse:
            result = await service.run_sync(run, request)
            if isinstance(result, ApiError):
                return error_response(result)
            return JSONResponse(result)

        wrapped.__doc__ = handler.__doc__
        wrapped.__name__ = handler.__name__
        return wrapped

    def ticket_activities(request: Request) -> dict[str, Any]:
        """
        summary: A ticket's activity timeline, oldest first
        parameters:
          - {name: ticket_id, in: path, required: true, schema: {type: integer}}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 500}}
          - {name: cursor, in: query, description: next_cursor of the previous page,
             schema: {type: string}}
        responses:
          200: {description: "{ticket_id, activities: [...], next_cursor}"}
          401: {description: missing, invalid or revoked token}
          404: {description: no such ticket for this tenant}
        """
        tenant = tenant_of(request)
        try:
            ticket_id = int(request.path_params["ticket_id"])
        except ValueError:
            raise ApiError(404, "not_found", "no such ticket") from None
        limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        cursor = request.query_params.get("cursor")
        after = decode_cursor(cursor) if cursor else None
        with connection(request) as conn:
            entries = ticket_timeline_page(conn, tenant, ticket_id, after=after, limit=limit + 1)
        if not entries and after is None:
            raise ApiError(404, "not_found", f"no ticket {ticket_id} with activities")
        page, more = entries[:limit], len(entries) > limit
        return {
            "ticket_id": ticket_id,
            "activities": [_activity(e) for e in page],
            "next_cursor": encode_cursor(page[-1].occurred_at, page[-1].activity_id)
            if more
            else None,
        }

    def templates_stats(request: Request) -> dict[str, Any]:
        """
        summary: Notifications per template and status, the last N whole days plus today
        parameters:
          - {name: days, in: query, schema: {type: integer, minimum: 0, maximum: 7, default: 7}}
        responses:
          200: {description: "{tenant_id, timezone, days, stats: [{day, template_id, status,
                notification_count}]}"}
          400: {description: days out of range}
          401: {description: missing, invalid or revoked token}
        """
        tenant = tenant_of(request)
        days = _int_param(request, "days", 7, 0, 7)
        zone = ZoneInfo(service.settings.email_timezone)
        with connection(request) as conn:
            rows = template_stats(conn, tenant, days, zone, datetime.now(UTC))
        return {
            "tenant_id": tenant,
            "timezone": zone.key,
            "days": days,
            "stats": [
                {
                    "day": row.day.isoformat(),
                    "template_id": row.template_id,
                    "status": row.status,
                    "notification_count": row.notification_count,
                }
                for row in rows
            ],
        }

    def insights(request: Request) -> dict[str, Any]:
        """
        summary: A feedback workspace's insight reports of its last N days with reports
        parameters:
          - {name: workspace, in: path, required: true, schema: {type: string}}
          - {name: days, in: query, schema: {type: integer, minimum: 1, maximum: 366,
             default: 7}}
        responses:
          200: {description: "{workspace, reports: [{day, source, items, positive, neutral,
                negative, avg_sentiment, top_topics, anomalies}]}"}
          401: {description: missing, invalid or revoked token}
          404: {description: no such workspace for this tenant}
        """
        tenant = tenant_of(request)
        days = _int_param(request, "days", 7, 1, 366)
        name = request.path_params["workspace"]
        with connection(request) as conn:
            try:
                workspace = get_workspace(conn, name)
            except WorkspaceError:
                workspace = None
            if workspace is None or workspace.tenant_id != tenant:
                raise ApiError(404, "not_found", f"no workspace named {name!r}")
            rows = latest_reports(conn, workspace.workspace_id, days)
        keys = (
            "day",
            "source",
            "items",
            "positive",
            "neutral",
            "negative",
            "avg_sentiment",
            "top_topics",
            "anomalies",
        )
        reports = [dict(zip(keys, row, strict=True)) for row in rows]
        for report in reports:
            report["day"] = report["day"].isoformat()
            if report["avg_sentiment"] is not None:
                report["avg_sentiment"] = float(report["avg_sentiment"])
        return {"workspace": name, "reports": reports}

    def conversation(request: Request) -> dict[str, Any]:
        """
        summary: A conversation ticket with its messages, state changes and work queues
        parameters:
          - {name: sequence, in: path, required: true, description: the ticket's number,
             schema: {type: integer}}
        responses:
          200: {description: "{ticket: {...}, messages: [...], state_changes: [...],
                queues: [...]}"}
          401: {description: missing, invalid or revoked token}
          404: {description: no such ticket for this tenant}
        """
        tenant = tenant_of(request)
        try:
            sequence = int(request.path_params["sequence"])
        except ValueError:
            raise ApiError(404, "not_found", "no such ticket") from None
        with connection(request) as conn:
            view = show_ticket(conn, tenant, sequence)
        if view is None:
            raise ApiError(404, "not_found", f"no conversation ticket {sequence}")
        return _jsonable(
            {
                "ticket": view.ticket,
                "messages": view.messages,
                "state_changes": view.state_changes,
                "queues": view.queues,
            }
        )

    def work_queue_counters(request: Request) -> dict[str, Any]:
        """
        summary: The tenant's work queues in agent order, with their live counters per state
        responses:
          200: {description: "{queues: [{name, priority, counts: {state: tickets}}]}"}
          401: {description: missing, invalid or revoked token}
        """
        tenant = tenant_of(request)
        with connection(request) as conn:
            rows = queue_counts(conn, tenant)
        return {
            "queues": [
                {"name": name, "priority": priority, "counts": counts}
                for name, priority, counts in rows
            ]
        }

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(SCHEMAS.get_schema(routes=request.app.routes))

    return [
        Route(
            f"{PREFIX}/tickets/{{ticket_id}}/activities",
            endpoint(ticket_activities),
            methods=["GET"],
        ),
        Route(f"{PREFIX}/templates/stats", endpoint(templates_stats), methods=["GET"]),
        Route(f"{PREFIX}/insights/{{workspace}}", endpoint(insights), methods=["GET"]),
        Route(f"{PREFIX}/conversations/{{sequence}}", endpoint(conversation), methods=["GET"]),
        Route(f"{PREFIX}/work-queues/counters", endpoint(work_queue_counters), methods=["GET"]),
        Route(f"{PREFIX}/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    ]
