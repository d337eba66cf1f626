"""pydantic-ai's OpenAIResponsesModel with a tool, run_sync and run_stream. Prints one JSON line.

Env: RUAPI_BASE_URL (…/v1), RUAPI_API_KEY, RUAPI_MODEL.
"""

import asyncio
import json
import os

from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

provider = OpenAIProvider(base_url=os.environ["RUAPI_BASE_URL"], api_key=os.environ["RUAPI_API_KEY"])
agent = Agent(OpenAIResponsesModel(os.environ["RUAPI_MODEL"], provider=provider), instructions="You look markers up.")


@agent.tool_plain
def get_marker(key: str) -> str:
    """Returns the marker stored under a key."""
    return f"marker-{key}-ok"


async def streamed() -> str:
    async with agent.run_stream('Look the marker up. [[call get_marker {"key": "stream"}]]') as result:
        return await result.get_output()


out = {
    "run": agent.run_sync('Look the marker up. [[call get_marker {"key": "sync"}]]').output,
    "stream": asyncio.run(streamed()),
}
print(json.dumps(out))
