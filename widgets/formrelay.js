/*! formrelay widget: shows a formrelay form in an isolated frame. No dependencies, no
 * cookies, no tracking. Paste:
 *   <div data-formrelay="intake"></div>
 *   <script src="https://forms.example.nl/widget.js" async></script>
 * Options on the element: data-lang="en" (language), data-title="..." (frame title
 * until the form tells its own).
 * A page whose origin is not in the form's allowed_origins cannot frame it (the
 * browser shows a grey error): when the frame stays silent after loading and formrelay
 * confirms that, the element shows the practice's phone and a link that opens the form
 * in a new tab instead, and the console names the setting to change. */
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
      // a frame the browser refused to show never answers
      if (!frame.formrelayAlive) window.setTimeout(function () { check(el, frame, id, lang); }, 1500);
    });
    el.setAttribute("data-formrelay-ready", "1");
    while (el.firstChild) el.removeChild(el.firstChild); // a fallback link, if any
    el.appendChild(frame);
    frames.push(frame);
  }

  // Ask formrelay whether this page may frame the form (the request carries its Origin);
  // only a confirmed "no" replaces the frame, so a slow frame is never taken for blocked.
  function check(el, frame, id, lang) {
    if (frame.formrelayAlive || !window.fetch) return;
    var url = base + "/f/" + id + "/embed.json" + (lang === "nl" || lang === "en" ? "?lang=" + lang : "");
    fetch(url, {credentials: "omit", referrerPolicy: "no-referrer"}).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (d) {
      if (!d || d.allowed !== false || frame.formrelayAlive) return;
      if (window.console) console.warn(d.console);
      var box = document.createElement("div");
      box.setAttribute("role", "note");
      box.className = "formrelay-fallback";
      box.style.overflowWrap = "anywhere";
      var p = document.createElement("p");
      p.textContent = d.text + " ";
      var open = document.createElement("a");
      open.href = d.url;
      open.target = "_blank";
      open.rel = "noopener";
      open.textContent = d.open;
      p.appendChild(open);
      box.appendChild(p);
      if (d.phone) {
        var q = document.createElement("p");
        q.textContent = d.call + " ";
        var tel = document.createElement("a");
        tel.href = "tel:" + d.phone.replace(/[^0-9+]/g, "");
        tel.textContent = d.phone;
        q.appendChild(tel);
        box.appendChild(q);
      }
      el.replaceChild(box, frame);
    }, function () {});
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
      frame.formrelayAlive = true;
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
