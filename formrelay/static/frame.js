/* formrelay form pages: the small script the page allows itself (CSP script-src 'self').
 * Everything works without it; with it:
 *  - the error summary takes focus, and its links move focus to the field;
 *  - the send button cannot be pressed twice;
 *  - inside the widget's iframe, the page tells the host page its height. It only ever
 *    posts to the form's allowed origins (body data-origins; the browser drops a message
 *    whose target origin is not the parent's), and answers a parent's "measure" request
 *    only from one of those origins. */
(function () {
  "use strict";
  var body = document.body;

  var summary = document.getElementById("error-summary");
  var title = document.getElementById("page-title");
  if (summary) {
    summary.focus();
  } else if (title && body.getAttribute("data-answer")) {
    title.focus();
  }

  document.addEventListener("click", function (e) {
    var link = e.target && e.target.closest ? e.target.closest(".error-summary a[href^='#']") : null;
    if (!link) return;
    var target = document.getElementById(link.getAttribute("href").slice(1));
    if (!target) return;
    e.preventDefault();
    var input = target.matches("input, select, textarea") ? target :
      target.querySelector("input, select, textarea");
    var label = target.closest(".field") || target;
    label.scrollIntoView({block: "start"});
    (input || target).focus({preventScroll: true});
  });

  var form = document.querySelector("main form[method='post']");
  if (form) {
    form.addEventListener("submit", function () {
      var button = form.querySelector("button[type='submit']");
      if (button) {
        // after the submit event, so the post itself is not affected
        window.setTimeout(function () { button.disabled = true; }, 0);
        // a form answered with a file (data-download) leaves this page as it is: allow
        // the next press (the copy may be downloaded again) once the first has gone
        if (form.hasAttribute("data-download")) {
          window.setTimeout(function () { button.disabled = false; }, 3000);
        }
      }
    });
    window.addEventListener("pageshow", function () {
      var button = form.querySelector("button[type='submit']");
      if (button) button.disabled = false;
    });
  }

  if (window.parent === window) return;
  var origins = (body.getAttribute("data-origins") || "").split(" ").filter(Boolean);
  if (location.ancestorOrigins && location.ancestorOrigins.length) {
    var parentOrigin = location.ancestorOrigins[0];
    origins = origins.filter(function (o) { return o === parentOrigin; });
  }
  if (!origins.length) return;

  var scrollUp = !!body.getAttribute("data-answer");
  var last = 0;
  var pending = false;
  function send(force) {
    pending = false;
    var height = Math.ceil(document.documentElement.getBoundingClientRect().height);
    if (!force && height === last) return;
    last = height;
    var msg = {formrelay: 1, height: height, title: document.title, top: scrollUp};
    scrollUp = false;
    origins.forEach(function (o) { window.parent.postMessage(msg, o); });
  }
  function later() {
    if (!pending) {
      pending = true;
      window.requestAnimationFrame(function () { send(false); });
    }
  }
  window.addEventListener("message", function (e) {
    if (e.source !== window.parent || origins.indexOf(e.origin) < 0) return;
    if (e.data && e.data.formrelay === "measure") send(true);
  });
  if (window.ResizeObserver) {
    new ResizeObserver(later).observe(document.documentElement);
  }
  window.addEventListener("resize", later);
  window.addEventListener("load", function () { send(true); });
  send(true);
})();
