"""The OpenAI Agents SDK with its default model API (Responses) and a function tool, run and run_streamed.

Prints one JSON line. Env: RUAPI_BASE_URL (…/v1), RUAPI_API_KEY, RUAPI_MODEL.
"""

import asyncio
import json
import os

from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled
from openai import AsyncOpenAI


@function_tool
def get_marker(key: str) -> str:
    """Returns the marker stored under a key."""
    return f"marker-{key}-ok"


async def main() -> None:
    client = AsyncOpenAI(base_url=os.environ["RUAPI_BASE_URL"], api_key=os.environ["RUAPI_API_KEY"], max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    set_tracing_disabled(True)
    agent = Agent(
        name="tester", instructions="You look markers up.", model=os.environ["RUAPI_MODEL"], tools=[get_marker]
    )
    out = {}
    result = await Runner.run(agent, 'Look the marker up. [[call get_marker {"key": "run"}]]')
    out["run"] = {"text": result.final_output, "items": [item.type for item in result.new_items]}
    streamed = Runner.run_streamed(agent, 'Look the marker up. [[call get_marker {"key": "streamed"}]]')
    kinds = set()
    async for event in streamed.stream_events():
        kinds.add(event.type)
    out["stream"] = {
        "text": streamed.final_output,
        "items": [item.type for item in streamed.new_items],
        "events": sorted(kinds),
    }
    print(json.dumps(out))


asyncio.run(main())
