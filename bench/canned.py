"""Generated fixtures of the benchmark: canned upstream bodies, the nginx config and njs handler
that serve them, the clients' request bodies, the gateway's catalog, LiteLLM's config and Portkey's
per-model routing configs.

Everything is written under bench/var/ (git-ignored) by `write_all`; `python3 bench/canned.py`
writes it on its own, for a look at the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
VAR_DIR = BENCH_DIR / "var"

HOST = "127.0.0.1"
NGINX_PORT = 18080
SLOW_PORT = 18081
RUAPI_PORT = 18100
LITELLM_PORT = 18200
PORTKEY_PORT = 18300

UPSTREAM_KEY = "sk-bench-upstream"
LITELLM_MASTER_KEY = "sk-bench-litellm-master"

# Catalog prices, USD per 1M tokens: the same in both gateways.
PRICE_INPUT = 0.15
PRICE_OUTPUT = 0.60

PROMPT_SYSTEM = "You are a helpful assistant."
PROMPT_USER = "Write a short poem about load balancers and the packets they carry."
PROMPT_TOKENS = 24


@dataclass(frozen=True)
class UpstreamParams:
    stream_chunks: int = 50
    slow_tokens: int = 20
    slow_delay_ms: int = 50
    max_tokens: int = 128


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def tokens(count: int) -> list[str]:
    return [f" tok{i}" for i in range(count)]


# -- canned upstream bodies -------------------------------------------------------------------


def openai_json(completion_tokens: int) -> str:
    return _dumps(
        {
            "id": "chatcmpl-bench0000000000000000000000",
            "object": "chat.completion",
            "created": 1764000000,
            "model": "gpt-bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(tokens(completion_tokens)).strip()},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": completion_tokens,
                "total_tokens": PROMPT_TOKENS + completion_tokens,
            },
        }
    )


def openai_chunk(delta: dict, finish_reason: str | None = None) -> dict:
    return {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": 1764000000,
        "model": "gpt-bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def openai_usage_chunk(completion_tokens: int) -> dict:
    chunk = openai_chunk({})
    chunk["choices"] = []
    chunk["usage"] = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion_tokens,
        "total_tokens": PROMPT_TOKENS + completion_tokens,
    }
    return chunk


def sse_data(obj: object) -> str:
    return f"data: {obj if isinstance(obj, str) else _dumps(obj)}\n\n"


def sse_event(event: str, obj: dict) -> str:
    return f"event: {event}\ndata: {_dumps(obj)}\n\n"


def openai_sse(count: int) -> str:
    parts = [sse_data(openai_chunk({"role": "assistant", "content": ""}))]
    parts += [sse_data(openai_chunk({"content": token})) for token in tokens(count)]
    parts.append(sse_data(openai_chunk({}, "stop")))
    parts.append(sse_data(openai_usage_chunk(count)))
    parts.append(sse_data("[DONE]"))
    return "".join(parts)


def anthropic_json(output_tokens: int) -> str:
    return _dumps(
        {
            "id": "msg_bench000000000000000000",
            "type": "message",
            "role": "assistant",
            "model": "claude-bench",
            "content": [{"type": "text", "text": "".join(tokens(output_tokens)).strip()}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": output_tokens},
        }
    )


def anthropic_start() -> str:
    message = {
        "id": "msg_bench000000000000000000",
        "type": "message",
        "role": "assistant",
        "model": "claude-bench",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1},
    }
    return sse_event("message_start", {"type": "message_start", "message": message}) + sse_event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )


def anthropic_delta(token: str) -> str:
    return sse_event(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}},
    )


def anthropic_end(output_tokens: int) -> str:
    return (
        sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        )
        + sse_event("message_stop", {"type": "message_stop"})
    )


def anthropic_sse(count: int) -> str:
    return anthropic_start() + "".join(anthropic_delta(t) for t in tokens(count)) + anthropic_end(count)


def responses_object(output_tokens: int, *, status: str = "completed") -> dict:
    text = "".join(tokens(output_tokens)).strip() if status == "completed" else ""
    output = [] if not text else [{"id": "msg_bench", "type": "message", "role": "assistant", "status": "completed",
                                   "content": [{"type": "output_text", "text": text, "annotations": []}]}]  # fmt: skip
    usage = None
    if status == "completed":
        usage = {"input_tokens": PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": PROMPT_TOKENS + output_tokens}  # fmt: skip
    return {"id": "resp_bench", "object": "response", "created_at": 1764000000, "status": status, "model": "gpt-resp",
            "output": output, "usage": usage, "error": None, "incomplete_details": None}  # fmt: skip


def responses_json(output_tokens: int) -> str:
    return _dumps(responses_object(output_tokens))


def responses_sse(count: int) -> str:
    """The OpenAI Responses event grammar (PROTOCOLS-RESPONSES §2.2) for one text message."""
    events: list[tuple[str, dict]] = []

    def emit(kind: str, **fields: object) -> None:
        events.append((kind, {"type": kind, "sequence_number": len(events), **fields}))

    opening = responses_object(count, status="in_progress")
    emit("response.created", response=opening)
    emit("response.in_progress", response=opening)
    item = {"id": "msg_bench", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    emit("response.output_item.added", output_index=0, item=item)
    part = {"type": "output_text", "text": "", "annotations": []}
    emit("response.content_part.added", item_id="msg_bench", output_index=0, content_index=0, part=part)
    for token in tokens(count):
        emit("response.output_text.delta", item_id="msg_bench", output_index=0, content_index=0, delta=token,
             logprobs=[])  # fmt: skip
    final = responses_object(count)
    text = final["output"][0]["content"][0]["text"]
    emit("response.output_text.done", item_id="msg_bench", output_index=0, content_index=0, text=text, logprobs=[])
    emit("response.content_part.done", item_id="msg_bench", output_index=0, content_index=0,
         part=final["output"][0]["content"][0])  # fmt: skip
    emit("response.output_item.done", output_index=0, item=final["output"][0])
    emit("response.completed", response=final)
    return "".join(sse_event(kind, data) for kind, data in events)


def canned_bodies(params: UpstreamParams) -> dict[str, str]:
    """name -> body served by nginx; the non-streaming replies carry as many tokens as the streams."""
    return {
        "openai_json": openai_json(params.stream_chunks),
        "openai_sse": openai_sse(params.stream_chunks),
        "anthropic_json": anthropic_json(params.stream_chunks),
        "anthropic_sse": anthropic_sse(params.stream_chunks),
        "responses_json": responses_json(params.stream_chunks),
        "responses_sse": responses_sse(params.stream_chunks),
    }


# -- nginx ------------------------------------------------------------------------------------

NJS_TEMPLATE = """// Generated by bench/canned.py: canned OpenAI / Anthropic replies, streamed or not by the body.
const BODIES = %(bodies)s;
const STREAM = /"stream"\\s*:\\s*true/;

function reply(r, name, type) {
    r.headersOut['Content-Type'] = type;
    r.return(200, BODIES[name]);
}

function chat(r) {
    if (STREAM.test(r.requestText || '')) {
        reply(r, 'openai_sse', 'text/event-stream; charset=utf-8');
    } else {
        reply(r, 'openai_json', 'application/json');
    }
}

function messages(r) {
    if (STREAM.test(r.requestText || '')) {
        reply(r, 'anthropic_sse', 'text/event-stream; charset=utf-8');
    } else {
        reply(r, 'anthropic_json', 'application/json');
    }
}

function responses(r) {
    if (STREAM.test(r.requestText || '')) {
        reply(r, 'responses_sse', 'text/event-stream; charset=utf-8');
    } else {
        reply(r, 'responses_json', 'application/json');
    }
}

export default {chat, messages, responses};
"""

NGINX_TEMPLATE = """# Generated by bench/canned.py: the fake upstream, loopback only, run in the foreground.
load_module /usr/lib/nginx/modules/ngx_http_js_module.so;
daemon off;
master_process on;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log warn;
events { worker_connections 16384; multi_accept on; }
http {
    access_log off;
    server_tokens off;
    js_import up from %(dir)s/upstream.js;
    client_body_buffer_size 1m;
    client_max_body_size 8m;
    client_body_temp_path %(dir)s/tmp/body;
    proxy_temp_path %(dir)s/tmp/proxy;
    fastcgi_temp_path %(dir)s/tmp/fastcgi;
    uwsgi_temp_path %(dir)s/tmp/uwsgi;
    scgi_temp_path %(dir)s/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 600s;
    tcp_nodelay on;
    server {
        listen %(host)s:%(port)d backlog=4096;
        location = /v1/chat/completions { js_content up.chat; }
        location = /v1/messages { js_content up.messages; }
        location = /v1/responses { js_content up.responses; }
        location = /v1/models {
            default_type application/json;
            return 200 '{"object":"list","data":[{"id":"gpt-bench","object":"model","created":0,"owned_by":"bench"}]}';
        }
        location / {
            access_log %(dir)s/unknown-paths.log;
            default_type application/json;
            return 404 '{"error":{"type":"not_found_error","message":"not found"}}';
        }
    }
}
"""


def write_nginx(params: UpstreamParams, var_dir: Path = VAR_DIR) -> Path:
    nginx_dir = var_dir / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (nginx_dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    (nginx_dir / "upstream.js").write_text(NJS_TEMPLATE % {"bodies": json.dumps(canned_bodies(params), indent=1)})
    conf = nginx_dir / "nginx.conf"
    conf.write_text(NGINX_TEMPLATE % {"dir": nginx_dir, "host": HOST, "port": NGINX_PORT})
    return conf


# -- request bodies -----------------------------------------------------------------------------


def request_body(protocol: str, model: str, *, stream: bool, max_tokens: int, extra: dict | None = None) -> bytes:
    """The client's request: the same prompt in every protocol (plus a leg's extra fields, e.g. `store`)."""
    if protocol == "openai":
        body: dict = {
            "model": model,
            "messages": [{"role": "system", "content": PROMPT_SYSTEM}, {"role": "user", "content": PROMPT_USER}],
            "max_tokens": max_tokens,
        }
    elif protocol == "responses":
        body = {"model": model, "instructions": PROMPT_SYSTEM, "input": PROMPT_USER, "max_output_tokens": max_tokens}
    else:
        body = {
            "model": model,
            "max_tokens": max_tokens,
            "system": PROMPT_SYSTEM,
            "messages": [{"role": "user", "content": PROMPT_USER}],
        }
    if stream:
        body["stream"] = True
    body.update(extra or {})
    return _dumps(body).encode()


# -- gateway configurations ------------------------------------------------------------------------


def ruapi_catalog() -> dict:
    """The catalog `manage.py loadcatalog` loads: the fake upstreams behind four models."""
    limits = {"context_window": 128000, "max_output_tokens": 4096}
    return {
        "providers": [
            {"name": "bench-openai", "kind": "openai", "base_url": f"http://{HOST}:{NGINX_PORT}/v1",
             "api_key": UPSTREAM_KEY},
            {"name": "bench-anthropic", "kind": "anthropic", "base_url": f"http://{HOST}:{NGINX_PORT}",
             "api_key": UPSTREAM_KEY},
            {"name": "bench-openai-slow", "kind": "openai", "base_url": f"http://{HOST}:{SLOW_PORT}/v1",
             "api_key": UPSTREAM_KEY},
            {"name": "bench-responses", "kind": "responses", "base_url": f"http://{HOST}:{NGINX_PORT}/v1",
             "api_key": UPSTREAM_KEY},
        ],
        "models": [
            {"name": "bench-gpt", "provider": "bench-openai", "upstream_model": "gpt-bench",
             "input": PRICE_INPUT, "output": PRICE_OUTPUT, **limits},
            {"name": "bench-claude", "provider": "bench-anthropic", "upstream_model": "claude-bench",
             "input": PRICE_INPUT, "output": PRICE_OUTPUT, **limits},
            {"name": "bench-gpt-slow", "provider": "bench-openai-slow", "upstream_model": "gpt-slow",
             "input": PRICE_INPUT, "output": PRICE_OUTPUT, **limits},
            {"name": "bench-resp", "provider": "bench-responses", "upstream_model": "gpt-resp",
             "input": PRICE_INPUT, "output": PRICE_OUTPUT, **limits},
        ],
    }  # fmt: skip


def litellm_config() -> dict:
    """The same three models for LiteLLM proxy (no database, a master key, prices per token)."""
    cost = {"input_cost_per_token": PRICE_INPUT / 1e6, "output_cost_per_token": PRICE_OUTPUT / 1e6,
            "max_input_tokens": 128000, "max_output_tokens": 4096}  # fmt: skip
    models = [
        ("bench-gpt", "openai/gpt-bench", f"http://{HOST}:{NGINX_PORT}/v1"),
        ("bench-claude", "anthropic/claude-bench", f"http://{HOST}:{NGINX_PORT}"),
        ("bench-gpt-slow", "openai/gpt-slow", f"http://{HOST}:{SLOW_PORT}/v1"),
        ("bench-resp", "openai/gpt-resp", f"http://{HOST}:{NGINX_PORT}/v1"),
    ]
    return {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {"model": model, "api_base": base, "api_key": UPSTREAM_KEY},
                "model_info": cost,
            }
            for name, model, base in models
        ],
        "litellm_settings": {"drop_params": True, "telemetry": False, "set_verbose": False},
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
    }


def portkey_configs() -> dict[str, dict]:
    """Portkey's gateway has no model list: each request names its upstream in an `x-portkey-config`
    header. Per model, the same upstream, key and upstream model name as in LiteLLM's config."""
    models = {
        "bench-gpt": ("openai", f"http://{HOST}:{NGINX_PORT}/v1", "gpt-bench"),
        "bench-claude": ("anthropic", f"http://{HOST}:{NGINX_PORT}/v1", "claude-bench"),  # + /messages
        "bench-gpt-slow": ("openai", f"http://{HOST}:{SLOW_PORT}/v1", "gpt-slow"),
        "bench-resp": ("openai", f"http://{HOST}:{NGINX_PORT}/v1", "gpt-resp"),
    }
    return {
        name: {"provider": provider, "custom_host": host, "api_key": UPSTREAM_KEY,
               "override_params": {"model": upstream_model}}
        for name, (provider, host, upstream_model) in models.items()
    }  # fmt: skip


def write_all(params: UpstreamParams, var_dir: Path = VAR_DIR) -> dict[str, Path]:
    """Write every generated file; returns their paths by name."""
    var_dir.mkdir(parents=True, exist_ok=True)
    canned_dir = var_dir / "canned"
    canned_dir.mkdir(exist_ok=True)
    for name, body in canned_bodies(params).items():
        (canned_dir / (name + (".sse" if name.endswith("sse") else ".json"))).write_text(body)
    catalog = var_dir / "ruapi-catalog.json"
    catalog.write_text(json.dumps(ruapi_catalog(), indent=2))
    litellm = var_dir / "litellm-config.yaml"
    litellm.write_text(json.dumps(litellm_config(), indent=2))  # JSON is YAML
    return {"nginx_conf": write_nginx(params, var_dir), "catalog": catalog, "litellm_config": litellm}


if __name__ == "__main__":
    for label, path in write_all(UpstreamParams()).items():
        print(f"{label}: {path}")
