"""One exception root for inferq; the API maps it once to the OpenAI error shape."""

from __future__ import annotations


class InferqError(Exception):
    """A failure with an HTTP status and an OpenAI-style type and code."""

    status_code = 500
    error_type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(InferqError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class NotFound(InferqError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class PayloadTooLarge(InferqError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class ServiceUnavailable(InferqError):
    status_code = 503
    error_type = "server_error"
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


# Failures that a job's own request caused (a grammar llama.cpp cannot compile, a prompt too
# long for the engine): 400 to the client, and no mark against the pool that ran the job
# (inferq.registry.outcomes), whose workers are healthy.
REQUEST_ERROR_CODES = frozenset({"context_length_exceeded", "invalid_grammar"})


class EngineError(InferqError):
    """An engine failed while generating; the job ends `failed` with this code."""

    code = "engine_error"


class InvalidValue(InferqError):
    """A well-formed request with a value out of range: 422, naming the field."""

    status_code = 422
    error_type = "invalid_request_error"
    code = "invalid_value"
