// The official openai Node SDK's Responses calls: responses.create (plain, then a function-tool round trip) and
// responses.stream. Prints one JSON line. Env: RUAPI_BASE_URL (…/v1), RUAPI_API_KEY, RUAPI_MODEL.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.RUAPI_BASE_URL, apiKey: process.env.RUAPI_API_KEY, maxRetries: 0 });
const model = process.env.RUAPI_MODEL;
const tools = [{
  type: "function", name: "get_marker", description: "Returns the marker stored under a key.", strict: true,
  parameters: { type: "object", properties: { key: { type: "string" } }, required: ["key"], additionalProperties: false },
}];
const out = {};
const plain = await client.responses.create({ model, input: "Answer plainly. [[say created-ok]]" });
out.create = { text: plain.output_text, status: plain.status, id: plain.id, usage: plain.usage };

const question = { role: "user", content: 'Look the marker up. [[call get_marker {"key": "node"}]]' };
const first = await client.responses.create({ model, input: [question], tools });
const call = first.output.find((item) => item.type === "function_call");
const result = `marker-${JSON.parse(call.arguments).key}-ok`;
const second = await client.responses.create({
  model, tools, input: [question, call, { type: "function_call_output", call_id: call.call_id, output: result }],
});
out.tools = { call: { name: call.name, arguments: call.arguments }, text: second.output_text, status: second.status };

const events = [];
const stream = client.responses.stream({ model, input: "Stream it. [[say streamed-ok]]" });
stream.on("event", (event) => events.push(event.type));
const final = await stream.finalResponse();
out.stream = { text: final.output_text, status: final.status, first: events[0], last: events.at(-1) };
console.log(JSON.stringify(out));
