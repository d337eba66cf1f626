// The Vercel AI SDK: generateText with a tool loop, then streamText with a tool loop. Prints one JSON line with what
// the program saw. Env: RUAPI_BASE_URL (…/v1), RUAPI_API_KEY, RUAPI_MODEL, RUAPI_PROVIDER: "openai" (default:
// createOpenAI(...)(model), the Responses API) or "anthropic" (createAnthropic(...)(model), the Messages API).
import { createAnthropic } from "@ai-sdk/anthropic";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";

const create = process.env.RUAPI_PROVIDER === "anthropic" ? createAnthropic : createOpenAI;
const provider = create({ baseURL: process.env.RUAPI_BASE_URL, apiKey: process.env.RUAPI_API_KEY });
const model = provider(process.env.RUAPI_MODEL);
const tools = {
  get_marker: tool({
    description: "Returns the marker stored under a key.",
    inputSchema: jsonSchema({
      type: "object",
      properties: { key: { type: "string" } },
      required: ["key"],
      additionalProperties: false,
    }),
    execute: async ({ key }) => `marker-${key}-ok`,
  }),
};
const out = {};
const generated = await generateText({
  model, tools, maxRetries: 0, stopWhen: stepCountIs(4),
  prompt: 'Look the marker up. [[call get_marker {"key": "generate"}]]',
});
out.generate = {
  text: generated.text, finish: generated.finishReason, steps: generated.steps.length,
  toolCalls: generated.steps.flatMap((s) => s.toolCalls.map((c) => c.toolName)),
  usage: generated.totalUsage,
};
const errors = [];
const streamed = streamText({
  model, tools, maxRetries: 0, stopWhen: stepCountIs(4), onError: ({ error }) => errors.push(String(error)),
  prompt: 'Look the marker up. [[call get_marker {"key": "stream"}]]',
});
let text = "";
for await (const part of streamed.fullStream) {
  if (part.type === "text-delta") text += part.text;
  if (part.type === "error") errors.push(String(part.error));
}
out.stream = { text, finish: await streamed.finishReason, steps: (await streamed.steps).length, errors };
console.log(JSON.stringify(out));
