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
  // A right code downloads the PDF and leaves this page as it is: drop the message of
  // an earlier wrong code then (a wrong code again brings a new page with it).
  var form = input ? input.form : null;
  if (form) {
    form.addEventListener("submit", function () {
      var stale = document.querySelectorAll("#error-summary, #e-code");
      for (var j = 0; j < stale.length; j++) stale[j].hidden = true;
      var field = form.querySelector(".has-error");
      if (field) field.classList.remove("has-error");
      var code = document.getElementById("f-code");
      if (code) code.removeAttribute("aria-invalid");
    });
  }
  var links = document.querySelectorAll("a[data-keep-hash]");
  for (var i = 0; i < links.length; i++) {
    if (key) {
      links[i].href = links[i].href.split("#")[0] + "#" + key;
    }
  }
})();
