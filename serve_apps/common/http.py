"""Request parsing that answers bad input with a 4xx and a reason, never a traceback."""

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

ModelT = TypeVar("ModelT", bound=BaseModel)


class RequestError(Exception):
    """A client error: its status and reason go back to the caller as JSON."""

    def __init__(self, status: int, reason: str, details: Any = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.details = details

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.reason}
        if self.details is not None:
            body["details"] = self.details
        return JSONResponse(body, status_code=self.status)


def _validation_details(error: ValidationError) -> list[dict[str, Any]]:
    # Only location and message: the raw input may be large and is the caller's own.
    return [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]} for e in error.errors()]


async def read_json_model(request: Request, model: type[ModelT], max_bytes: int) -> ModelT:
    """Parse and validate a JSON body, or raise RequestError (405, 413, 415, 400, 422)."""
    if request.method != "POST":
        raise RequestError(405, "use POST with a JSON body")
    content_type = request.headers.get("content-type", "application/json")
    if not content_type.split(";")[0].strip().endswith("json"):
        raise RequestError(415, f"content-type must be application/json, not {content_type}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"request body is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise RequestError(413, f"request body is larger than {max_bytes} bytes")
    if not body:
        raise RequestError(400, "request body is empty; send a JSON object")
    try:
        return model.model_validate_json(bytes(body))
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise RequestError(400, "request body is not valid JSON") from None
        raise RequestError(
            422, "request body does not match the schema", _validation_details(exc)
        ) from None
