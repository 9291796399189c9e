// The patient-copy page: the link's secret is in the URL fragment (after '#'), which
// browsers never send to a server, so it is in no log and no Referer. Copy it into the
// pickup form, which is POSTed; keep it on the language link.
(function () {
  "use strict";
  var key = window.location.hash.replace(/^#/, "");
  var input = document.getElementById("copy-key");
  if (input && key && /^[A-Za-z0-9_-]+$/.test(key) && !input.value) {
    input.value = key;
  }
  var warn = document.getElementById("copy-nokey");
  if (warn && input && input.value) {
    warn.hidden = true;
  }
  var links = document.querySelectorAll("a[data-keep-hash]");
  for (var i = 0; i < links.length; i++) {
    if (key) {
      links[i].href = links[i].href.split("#")[0] + "#" + key;
    }
  }
})();
