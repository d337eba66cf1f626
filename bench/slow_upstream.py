"""The slow fake upstream of S4: streams N tokens with a delay between two of them (aiohttp, uvloop).

POST /v1/chat/completions (OpenAI SSE) and POST /v1/messages (Anthropic SSE) stream when the body
says `"stream": true`, else answer the canned JSON at once. The first token goes out immediately;
each further token after `--delay-ms`. Listens on 127.0.0.1 only.

    python3 bench/slow_upstream.py --port 18081 --tokens 20 --delay-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import json

import canned
import uvloop
from aiohttp import web

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


class SlowUpstream:
    def __init__(self, count: int, delay_ms: int) -> None:
        self.delay = delay_ms / 1000
        words = canned.tokens(count)
        openai_head = canned.sse_data(canned.openai_chunk({"role": "assistant", "content": ""}))
        self.openai_tokens = [canned.sse_data(canned.openai_chunk({"content": w})).encode() for w in words]
        self.openai_tokens[0] = openai_head.encode() + self.openai_tokens[0]
        self.openai_tail = (
            canned.sse_data(canned.openai_chunk({}, "stop"))
            + canned.sse_data(canned.openai_usage_chunk(count))
            + canned.sse_data("[DONE]")
        ).encode()
        self.anthropic_tokens = [canned.anthropic_delta(w).encode() for w in words]
        self.anthropic_tokens[0] = canned.anthropic_start().encode() + self.anthropic_tokens[0]
        self.anthropic_tail = canned.anthropic_end(count).encode()
        self.openai_json = canned.openai_json(count).encode()
        self.anthropic_json = canned.anthropic_json(count).encode()

    @staticmethod
    async def wants_stream(request: web.Request) -> bool:
        try:
            return bool(json.loads(await request.read()).get("stream"))
        except (ValueError, AttributeError):
            return False

    async def stream(self, request: web.Request, parts: list[bytes], tail: bytes) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        for index, part in enumerate(parts):
            if index:
                await asyncio.sleep(self.delay)
            await response.write(part)
        await response.write(tail)
        await response.write_eof()
        return response

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if await self.wants_stream(request):
            return await self.stream(request, self.openai_tokens, self.openai_tail)
        return web.Response(body=self.openai_json, content_type="application/json")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        if await self.wants_stream(request):
            return await self.stream(request, self.anthropic_tokens, self.anthropic_tail)
        return web.Response(body=self.anthropic_json, content_type="application/json")


async def serve(port: int, count: int, delay_ms: int) -> None:
    upstream = SlowUpstream(count, delay_ms)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.chat)
    app.router.add_post("/v1/messages", upstream.messages)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, canned.HOST, port, backlog=4096).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=canned.SLOW_PORT)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay-ms", type=int, default=50)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.tokens, args.delay_ms))


if __name__ == "__main__":
    main()
