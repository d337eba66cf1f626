// Playground: chat over a WebSocket whose server side runs the public API in process
// (usage/consumers.py). Replies stream token by token; Stop hangs up on the request.
(function () {
  "use strict";
  var script = document.getElementById("playground-js");
  var form = document.getElementById("playground-form");
  if (!script || !form) { return; }
  var transcript = document.getElementById("pg-transcript");
  var input = document.getElementById("pg-input");
  var submit = document.getElementById("pg-submit");
  var stop = document.getElementById("pg-stop");
  var status = document.getElementById("pg-status");
  var code = document.getElementById("pg-code");
  var history = [];
  var current = null;  // the assistant bubble being streamed
  var socket = null;

  function settings() {
    var f = new FormData(form);
    return { model: f.get("model"), protocol: f.get("protocol"), system: f.get("system") || "",
             temperature: f.get("temperature"), max_tokens: f.get("max_tokens") };
  }
  function bubble(role, text) {
    var div = document.createElement("div");
    div.className = "msg msg-" + role;
    div.dataset.role = role;
    var who = document.createElement("strong"); who.textContent = role === "user" ? "You" : role === "error" ? "Error" : "Assistant";
    var body = document.createElement("div"); body.className = "msg-text"; body.textContent = text;
    div.appendChild(who); div.appendChild(body);
    transcript.appendChild(div);
    return div;
  }
  function busy(on) { submit.disabled = on; stop.disabled = !on; }
  function py(s) { return JSON.stringify(s); }
  function renderCode() {
    var s = settings(), base = script.dataset.baseUrl, lines;
    var msgs = history.length ? history : [{ role: "user", content: "Hello" }];
    if (s.protocol === "anthropic") {
      lines = ["from anthropic import Anthropic", "", "client = Anthropic(base_url=" + py(base) + ", api_key=\"YOUR_RUAPI_KEY\")",
        "with client.messages.stream(", "    model=" + py(s.model) + ",", "    max_tokens=" + (parseInt(s.max_tokens, 10) || 1024) + ","];
      if (s.system) { lines.push("    system=" + py(s.system) + ","); }
      if (s.temperature !== "") { lines.push("    temperature=" + s.temperature + ","); }
      lines.push("    messages=" + JSON.stringify(msgs) + ",", ") as stream:", "    for text in stream.text_stream:",
        "        print(text, end=\"\", flush=True)");
    } else {
      var all = (s.system ? [{ role: "system", content: s.system }] : []).concat(msgs);
      lines = ["from openai import OpenAI", "", "client = OpenAI(base_url=" + py(base + "/v1") + ", api_key=\"YOUR_RUAPI_KEY\")",
        "stream = client.chat.completions.create(", "    model=" + py(s.model) + ",", "    messages=" + JSON.stringify(all) + ","];
      if (s.temperature !== "") { lines.push("    temperature=" + s.temperature + ","); }
      if (s.max_tokens) { lines.push("    max_tokens=" + parseInt(s.max_tokens, 10) + ","); }
      lines.push("    stream=True,", "    stream_options={\"include_usage\": True},", ")", "for chunk in stream:",
        "    if chunk.choices and chunk.choices[0].delta.content:", "        print(chunk.choices[0].delta.content, end=\"\", flush=True)");
    }
    code.textContent = lines.join("\n");
  }
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + script.dataset.wsPath);
    socket.onopen = function () { status.textContent = "Ready."; status.dataset.state = "ready"; busy(false); };
    socket.onclose = function () { status.textContent = "Disconnected — reload the page."; status.dataset.state = "closed"; busy(true); stop.disabled = true; };
    socket.onmessage = function (message) {
      var m = JSON.parse(message.data);
      if (m.type === "start") {
        current = bubble("assistant", ""); status.textContent = "Streaming…"; status.dataset.state = "streaming";
      } else if (m.type === "delta" && current) {
        current.querySelector(".msg-text").textContent += m.text;
        transcript.scrollTop = transcript.scrollHeight;
      } else if (m.type === "done") {
        var text = current ? current.querySelector(".msg-text").textContent : "";
        if (text) { history.push({ role: "assistant", content: text }); }
        var b = m.billed || {}, u = m.usage || {};
        var inTok = b.input_tokens !== undefined ? b.input_tokens : u.input_tokens;
        var outTok = b.output_tokens !== undefined ? b.output_tokens : u.output_tokens;
        var cost = b.cost_usd !== undefined ? b.cost_usd : u.cost;
        var meta = document.createElement("small");
        meta.className = "muted msg-meta"; meta.dataset.testid = "pg-reply-meta";
        meta.textContent = (m.stopped ? "Stopped · " : "") + inTok + " in / " + outTok + " out tokens · $" + cost + " · " + m.request_id;
        if (current) { current.appendChild(meta); }
        status.textContent = m.stopped ? "Stopped." : "Done."; status.dataset.state = m.stopped ? "stopped" : "done";
        current = null; busy(false); renderCode();
      } else if (m.type === "error") {
        // a reply that failed before any text: no empty "Assistant" bubble above the error
        if (current && !current.querySelector(".msg-text").textContent) { current.remove(); }
        var err = bubble("error", m.message); err.className += " alert alert-error";
        status.textContent = "Error."; status.dataset.state = "error"; current = null; busy(false);
      }
    };
  }
  document.getElementById("pg-send").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text || !socket || socket.readyState !== 1) { return; }
    history.push({ role: "user", content: text });
    bubble("user", text); input.value = ""; busy(true);
    var s = settings();
    socket.send(JSON.stringify({ type: "chat", protocol: s.protocol, model: s.model, system: s.system,
      temperature: s.temperature, max_tokens: s.max_tokens, messages: history }));
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { document.getElementById("pg-submit").click(); }
  });
  stop.addEventListener("click", function () { if (socket) { socket.send(JSON.stringify({ type: "stop" })); } });
  document.getElementById("pg-clear").addEventListener("click", function () { history = []; transcript.textContent = ""; renderCode(); });
  form.addEventListener("change", renderCode);
  form.addEventListener("input", renderCode);
  busy(true); stop.disabled = true;
  renderCode();
  connect();
})();
