"""`POST /webhooks/feedback/{workspace}`: pushed feedback, queued on `feedback`.

Bearer token of the workspace (compared with its stored hash in constant time): 401 when missing
or wrong, and the same 401 for a workspace that does not exist or has no webhook source, so the
endpoint does not reveal which workspaces exist. A JSON object or an array of
`{external_id, text, author, created_at, rating?, metadata?}`: 400 naming the problem, 413 over
1 MiB, 415 not JSON. 202 only after every item is durably enqueued.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from assets.feedback.rules import FeedbackValidationError
from assets.feedback.sources.webhook import feedback_message_key, to_message, validate_payload
from assets.feedback.store import WorkspaceError, token_matches, webhook_source

QUEUE = "feedback"


def routes(service) -> list[Route]:
    """Route provider for `webhooks.app` (`ROUTE_PROVIDERS`)."""

    def lookup(workspace: str):
        with service.warehouse.connection() as conn:
            try:
                return webhook_source(conn, workspace)
            except WorkspaceError:
                return None, None

    async def receive_feedback(request: Request) -> JSONResponse:
        workspace = request.path_params["workspace"]
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        source, token_hash = await service.run_sync(lookup, workspace)
        if scheme.lower() != "bearer" or not token or not token_matches(token.strip(), token_hash):
            return JSONResponse(
                {"error": "missing or invalid bearer token for this workspace"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="feedback"'},
            )
        raw = await service.read_body(request, ("application/json",))
        document = service.parse_json(raw, verified=True)  # after the token check
        try:
            items = validate_payload(document)
        except FeedbackValidationError as exc:  # the token held: kept with the reason, 400
            service.reject_input(400, str(exc), QUEUE)
        messages = [to_message(source, item) for item in items]
        await service.enqueue(QUEUE, messages, feedback_message_key)
        return JSONResponse(
            {"accepted": len(messages), "item_ids": [m["item_id"] for m in messages]},
            status_code=202,
        )

    return [Route("/webhooks/feedback/{workspace}", receive_feedback, methods=["POST"])]
