"""OpenAI-style errors, shaped like vLLM's: `{"error": {"message", "type", "param", "code"}}`.

vLLM puts the HTTP status in `code` and uses the error types below; the fake does the
same so that clients (and the operator) see one protocol from both engines.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class ApiError(Exception):
    """An error answered to the client with an HTTP status and an OpenAI error body."""

    def __init__(
        self,
        message: str,
        *,
        status: HTTPStatus = HTTPStatus.BAD_REQUEST,
        err_type: str = "BadRequestError",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.err_type = err_type
        self.param = param

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {
            "error": {
                "message": self.message,
                "type": self.err_type,
                "param": self.param,
                "code": int(self.status),
            }
        }


def bad_request(message: str, param: str | None = None) -> ApiError:
    """400: the request is malformed or a value is out of range (`param` names the field)."""
    return ApiError(message, param=param)


def invalid_user_input(message: str, param: str | None = None) -> ApiError:
    """400 with vLLM's type for adapter admin requests it refuses."""
    return ApiError(message, err_type="InvalidUserInput", param=param)


def not_found(message: str, param: str | None = None) -> ApiError:
    """404: an unknown model or adapter."""
    return ApiError(message, status=HTTPStatus.NOT_FOUND, err_type="NotFoundError", param=param)


def model_not_found(model: str) -> ApiError:
    """404 for a request naming a model that is neither the base nor a loaded adapter (vLLM's words)."""
    return not_found(f"The model `{model}` does not exist.", param="model")
