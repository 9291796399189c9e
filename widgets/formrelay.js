/*! formrelay widget: shows a formrelay form in an isolated frame. No dependencies, no
 * cookies, no tracking. Paste:
 *   <div data-formrelay="intake"></div>
 *   <script src="https://forms.example.nl/widget.js" async></script>
 * Options on the element: data-lang="en" (language), data-title="..." (frame title
 * until the form tells its own). */
(function () {
  "use strict";
  var me = document.currentScript;
  if (!me) {
    var all = document.querySelectorAll("script[src*='/widget.js']");
    me = all[all.length - 1];
  }
  if (!me || !window.URL || !window.postMessage) return;
  var base = new URL(me.src, location.href).origin;
  var ID = /^[a-z0-9][a-z0-9_-]{0,39}$/;
  var frames = [];

  function mount(el) {
    if (el.getAttribute("data-formrelay-ready")) return;
    var id = el.getAttribute("data-formrelay") || "";
    if (!ID.test(id)) return;
    var lang = (el.getAttribute("data-lang") || "").toLowerCase();
    var url = base + "/f/" + id + "?embed=1";
    if (lang === "nl" || lang === "en") url += "&lang=" + lang;
    var frame = document.createElement("iframe");
    frame.src = url;
    frame.title = el.getAttribute("data-title") || (lang === "en" ? "Form" : "Formulier");
    // scripts (height, focus) and posting the form, in formrelay's own origin so the
    // messages can be checked; popups only for the practice's phone and mail links;
    // downloads for the patient's copy (PDF) on the thank-you page
    frame.setAttribute("sandbox", "allow-forms allow-scripts allow-same-origin " +
                       "allow-popups allow-popups-to-escape-sandbox allow-downloads");
    frame.setAttribute("referrerpolicy", "no-referrer");
    frame.setAttribute("allow", "camera 'none'; microphone 'none'; geolocation 'none'");
    frame.style.display = "block";
    frame.style.width = "100%";
    frame.style.border = "0";
    frame.style.height = "40rem";
    frame.style.colorScheme = "normal";
    frame.addEventListener("load", function () {
      // ask for the height again (a new page after posting); only formrelay can answer
      if (frame.contentWindow) frame.contentWindow.postMessage({formrelay: "measure"}, base);
    });
    el.setAttribute("data-formrelay-ready", "1");
    while (el.firstChild) el.removeChild(el.firstChild); // a fallback link, if any
    el.appendChild(frame);
    frames.push(frame);
  }

  function scan() {
    var els = document.querySelectorAll("[data-formrelay]");
    for (var i = 0; i < els.length; i++) mount(els[i]);
  }

  window.addEventListener("message", function (e) {
    if (e.origin !== base) return;
    var d = e.data;
    if (!d || d.formrelay !== 1 || typeof d.height !== "number") return;
    for (var i = 0; i < frames.length; i++) {
      var frame = frames[i];
      if (frame.contentWindow !== e.source) continue;
      frame.style.height = Math.max(150, Math.min(Math.ceil(d.height), 20000)) + "px";
      if (typeof d.title === "string" && d.title) frame.title = d.title.slice(0, 200);
      if (d.top && frame.getBoundingClientRect().top < 0) frame.scrollIntoView();
    }
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", scan);
  } else {
    scan();
  }
  window.addEventListener("load", scan);
})();
