// RuAPI dashboard behaviour: copy buttons, one-time secret dialogs, the mobile nav. No framework.
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Fallback for plain-http hosts, where the async clipboard API is unavailable.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = document.execCommand("copy");
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy failed"));
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (button) {
      var target = document.querySelector(button.getAttribute("data-copy-target"));
      var text = target ? (target.value !== undefined && target.tagName === "INPUT" ? target.value : target.textContent) : "";
      var label = button.textContent;
      copyText(text).then(function () {
        button.textContent = "Copied";
        button.setAttribute("data-copied", "true");
      }, function () {
        button.textContent = "Press Ctrl+C";
        if (target && target.select) { target.select(); }
      }).finally(function () {
        setTimeout(function () { button.textContent = label; }, 2500);
      });
      return;
    }
    var toggle = event.target.closest("[data-nav-toggle]");
    if (toggle) {
      var open = document.body.classList.toggle("nav-open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    }
  });

  function openDialogs(root) {
    (root || document).querySelectorAll("dialog[data-open-on-load]").forEach(function (dialog) {
      if (!dialog.open && dialog.showModal) { dialog.showModal(); }
      dialog.addEventListener("close", function () { dialog.remove(); });
      var input = dialog.querySelector("input[readonly]");
      if (input) { input.focus(); input.select(); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () { openDialogs(document); });
  document.addEventListener("htmx:load", function (event) { openDialogs(event.target.parentNode || document); });

  // Server errors during htmx requests: say so instead of failing silently.
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr.status;
    alert(status === 403 ? "Your role cannot do this." : "Something went wrong (" + status + "). Reload and try again.");
  });
})();
