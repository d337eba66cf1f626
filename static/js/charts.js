// Overview charts from the server's daily aggregation (json_script "chart-data"); Chart.js is vendored.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("chart-data").textContent);
  var css = getComputedStyle(document.documentElement);
  var accent = css.getPropertyValue("--accent").trim() || "#4f46e5";
  var accent2 = css.getPropertyValue("--accent-2").trim() || "#0d9488";
  function chart(id, label, values, color) {
    var el = document.getElementById(id);
    if (!el || !window.Chart) { return; }
    new window.Chart(el, {
      type: "bar",
      data: { labels: data.labels, datasets: [{ label: label, data: values, backgroundColor: color }] },
      options: { responsive: true, maintainAspectRatio: false, plugins: { legend: { display: false } },
                 scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { beginAtZero: true } } },
    });
  }
  chart("chart-requests", "Requests", data.requests, accent);
  chart("chart-spend", "Spend (USD)", data.spend, accent2);
})();
