"""The public /v1 API (django-ninja): thin async operations over the proxy's pipelines.

Bodies are read and validated by the pipelines themselves (orjson, protocol-shaped 4xx), so ninja
serves routing, the OpenAPI description at /v1/docs, and one place for unexpected errors.
"""

import logging

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI

from proxy import chat as chat_pipeline
from proxy import listing, media, stored_responses
from proxy.responses import ANTHROPIC, OPENAI, Call, error_response
from proxy.responses_pipeline import responses_create
from proxy.translate.errors import ErrorKind, GatewayError

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="RuAPI public API",
    version="1",
    description="OpenAI- and Anthropic-compatible endpoints. Authenticate with `Authorization: Bearer <key>` "
    "(or `x-api-key` on /v1/messages).",
    urls_namespace="v1",
    docs_url="/docs",
)


def protocol_of(request: HttpRequest) -> str:
    if request.path.startswith("/v1/messages"):
        return ANTHROPIC
    return listing.models_protocol(request)


@api.exception_handler(Exception)
def unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("unhandled error in %s", request.path)
    call = Call(request, protocol_of(request), endpoint="error")
    return error_response(call, GatewayError(ErrorKind.API_ERROR, "The gateway failed to process the request."))


@api.post("/chat/completions", summary="Create a chat completion (OpenAI protocol)", include_in_schema=True)
async def chat_completions(request: HttpRequest):
    return await chat_pipeline.chat(request, OPENAI)


@api.post("/messages", summary="Create a message (Anthropic protocol)")
async def messages(request: HttpRequest):
    return await chat_pipeline.chat(request, ANTHROPIC)


@api.post("/responses", summary="Create a model response (OpenAI Responses protocol)")
async def responses(request: HttpRequest):
    return await responses_create(request)


@api.post("/messages/count_tokens", summary="Count the input tokens of a message (Anthropic protocol)")
async def count_tokens(request: HttpRequest):
    return await listing.count_tokens(request)


@api.get("/models", summary="List models (OpenAI shape, or Anthropic's with `anthropic-version`)")
async def list_models(request: HttpRequest):
    return await listing.list_models(request)


@api.get("/models/{path:model_id}", summary="Retrieve a model")
async def get_model(request: HttpRequest, model_id: str):
    return await listing.get_model(request, model_id)


@api.post("/embeddings", summary="Create embeddings (OpenAI protocol)")
async def embeddings(request: HttpRequest):
    return await media.embeddings(request)


@api.post("/images/generations", summary="Generate images (OpenAI protocol)")
async def images_generations(request: HttpRequest):
    return await media.images(request)


@api.post("/audio/transcriptions", summary="Transcribe audio (OpenAI protocol, multipart)")
async def audio_transcriptions(request: HttpRequest):
    return await media.transcriptions(request)


@api.post("/audio/speech", summary="Text to speech (OpenAI protocol; binary audio)")
async def audio_speech(request: HttpRequest):
    return await media.speech(request)


# -- Responses API: stored responses (issue 13, proxy/stored_responses.py) ----------------------------------
# The fixed paths come before /responses/{response_id}: Django takes the first pattern that matches.
@api.post("/responses/input_tokens", summary="Count the input tokens of a response request (Responses API)")
async def responses_input_tokens(request: HttpRequest):
    return await stored_responses.input_tokens(request)


@api.post("/responses/compact", include_in_schema=False)
async def responses_compact(request: HttpRequest):
    return await stored_responses.compact(request)


@api.get("/responses/{response_id}/input_items", summary="List a stored response's input items (Responses API)")
async def responses_input_items(request: HttpRequest, response_id: str):
    return await stored_responses.input_items(request, response_id)


@api.post("/responses/{response_id}/cancel", summary="Cancel a background response (none here: 400)")
async def responses_cancel(request: HttpRequest, response_id: str):
    return await stored_responses.cancel(request, response_id)


@api.get("/responses/{response_id}", summary="Retrieve a stored response (Responses API)")
async def responses_retrieve(request: HttpRequest, response_id: str):
    return await stored_responses.retrieve(request, response_id)


@api.delete("/responses/{response_id}", summary="Delete a stored response (Responses API)")
async def responses_delete(request: HttpRequest, response_id: str):
    return await stored_responses.delete(request, response_id)


# -- end of the Responses API's stored-response routes ------------------------------------------------------


@api.api_operation(["GET", "POST", "PUT", "PATCH", "DELETE"], "/{path:rest}", include_in_schema=False)
async def not_found(request: HttpRequest, rest: str):
    call = Call(request, protocol_of(request), endpoint="unknown")
    return error_response(call, GatewayError(ErrorKind.NOT_FOUND, f"Unknown endpoint: {request.method} /v1/{rest}"))
