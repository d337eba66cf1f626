// Usage page: charts from the rollups (json_script "usage-chart-data") and the live request feed
// (WebSocket; each completed request of the organisation is prepended to the request table).
(function () {
  "use strict";
  var css = getComputedStyle(document.documentElement);
  var accent = css.getPropertyValue("--accent").trim() || "#4f46e5";
  var accent2 = css.getPropertyValue("--accent-2").trim() || "#0d9488";
  var dataEl = document.getElementById("usage-chart-data");
  var data = dataEl ? JSON.parse(dataEl.textContent) : null;
  function chart(id, type, labels, datasets, stacked) {
    var el = document.getElementById(id);
    if (!el || !window.Chart) { return; }
    new window.Chart(el, {
      type: type, data: { labels: labels, datasets: datasets },
      options: { responsive: true, maintainAspectRatio: false, indexAxis: type === "bar-h" ? "y" : "x",
                 plugins: { legend: { display: datasets.length > 1 } },
                 scales: { x: { stacked: !!stacked, ticks: { maxTicksLimit: 8 } }, y: { stacked: !!stacked, beginAtZero: true } } },
    });
  }
  if (data) {
    chart("chart-spend", "bar", data.labels, [{ label: "Spend (USD)", data: data.spend, backgroundColor: accent2 }]);
    chart("chart-tokens", "bar", data.labels, [
      { label: "Input", data: data.input_tokens, backgroundColor: accent },
      { label: "Output", data: data.output_tokens, backgroundColor: accent2 }], true);
    chart("chart-requests", "line", data.labels, [{ label: "Requests", data: data.requests, borderColor: accent, tension: 0.2 }]);
    chart("chart-by-model", "bar", data.by_model.labels, [{ label: "Spend (USD)", data: data.by_model.spend, backgroundColor: accent }]);
    chart("chart-by-key", "bar", data.by_key.labels, [{ label: "Spend (USD)", data: data.by_key.spend, backgroundColor: accent2 }]);
  }

  var script = document.getElementById("usage-js");
  var body = document.getElementById("requests-body");
  var status = document.querySelector("[data-testid=live-status]");
  if (!script || !body || !script.dataset.livePath) { return; }
  if (!script.dataset.liveEnabled) { if (status) { status.textContent = "Live feed: first page only"; } return; }
  function cell(text, code) {
    var td = document.createElement("td");
    if (code) { var c = document.createElement("code"); c.textContent = text; td.appendChild(c); } else { td.textContent = text; }
    return td;
  }
  function addRow(r) {
    var empty = body.querySelector(".empty-row");
    if (empty) { empty.remove(); }
    var tr = document.createElement("tr");
    tr.className = "live-row";
    tr.dataset.requestId = r.request_id;
    var time = r.created_at.replace("T", " ").slice(0, 19);
    [time, r.key || "—", r.model, r.provider, r.input_tokens + " / " + r.output_tokens, "$" + r.cost_usd,
     r.latency_ms + " ms", r.status_code + (r.error_type ? " " + r.error_type : "")].forEach(function (t) { tr.appendChild(cell(t)); });
    tr.appendChild(cell(r.request_id, true));
    body.insertBefore(tr, body.firstChild);
    while (body.children.length > 200) { body.removeChild(body.lastChild); }
  }
  var delay = 1000;
  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + script.dataset.livePath);
    socket.onopen = function () { delay = 1000; if (status) { status.textContent = "Live feed: on"; status.dataset.state = "on"; } };
    socket.onmessage = function (message) {
      var payload = JSON.parse(message.data);
      if (payload.type === "request") { addRow(payload.request); }
    };
    socket.onclose = function (event) {
      if (status) { status.textContent = "Live feed: off"; status.dataset.state = "off"; }
      if (event.code !== 1000 && event.code !== 4403) { setTimeout(connect, delay); delay = Math.min(delay * 2, 30000); }
    };
  }
  connect();
})();
