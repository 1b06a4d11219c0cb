// hubbub dashboard: live updates over server-sent events, and confirmations.
// On each "changed" event the page is fetched again and every [data-live] section swapped,
// so forms outside those sections (search, typed input) keep what the user entered.
(function () {
  "use strict";
  var status = document.getElementById("live-status");
  var busy = false, again = false;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (old) {
          var fresh = old.id && doc.getElementById(old.id);
          var focused = document.activeElement && old.contains(document.activeElement);
          if (fresh && !focused) { old.replaceWith(document.importNode(fresh, true)); }
        });
        document.dispatchEvent(new CustomEvent("hubbub:updated"));
      })
      .catch(function () {})
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  function connect() {
    if (!window.EventSource || !document.querySelector("[data-live]")) { return; }
    var source = new EventSource(document.body.getAttribute("data-live-url"));
    // The stream reports changes after it opened: fetch once on (re)opening, for what
    // changed between rendering the page (or losing the stream) and now.
    source.onopen = function () { status.className = "live on"; refresh(); };
    source.onerror = function () { status.className = "live off"; };
    source.addEventListener("changed", refresh);
  }

  document.addEventListener("submit", function (e) {
    var form = e.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
  });
  connect();
})();
