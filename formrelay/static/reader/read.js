/* The browser reader: open held submissions in the page (OpenPGP.js).
 *
 * The locked keys are fetched when the page loads and handed to a Web Worker
 * (reader/decrypt.js, its script checked against the hash this page pins before it
 * runs); the reading passphrase unlocks them in the worker's memory only (never sent,
 * never stored: no localStorage, no cookies, no caching: the server answers no-store).
 * The worker fetches a ciphertext (the server audits the read), decrypts it as a stream
 * and takes the MIME message apart beside the page, which keeps drawing; the page shows
 * the answers as text (never as markup), uploads as downloads from in-memory blobs, a
 * copy button per answer and for the whole text. Nothing decrypted is sent anywhere; a
 * failure is reported by its kind only. After the session's idle time the keys and what was shown
 * are dropped; a reload asks for the passphrase again. No inline script (CSP). */
(function () {
  "use strict";
  var root = document.getElementById("reader");
  if (!root || !window.crypto || !window.crypto.subtle || !window.Worker ||
      !window.fetch || !window.TextDecoderStream) {
    return;  // no reader here: the .eml/.asc downloads stay, as without a key
  }
  var msg = root.dataset;
  var unlockForm = document.getElementById("unlock");
  var opened = document.getElementById("opened");
  var list = document.getElementById("list");
  var error = document.getElementById("read-error");
  var busy = document.getElementById("read-busy");
  var lockedKeys = null;   // the armoured locked keys, as the server has them
  var worker = null;       // holds the unlocked keys; ended to lock them
  var keys = false;        // whether the worker has unlocked a key
  var calls = {};
  var nextCall = 0;
  var target = null;       // the row's button being opened
  var blobs = [];
  var wholeText = "";
  var idleTimer = null;

  var ready = fetch(root.dataset.keys, { credentials: "same-origin", cache: "no-store" })
    .then(function (r) { return r.json(); })
    .then(function (answer) { lockedKeys = answer.keys; return startWorker(); });

  // A worker's script has no integrity attribute: the page fetches it with the hash it
  // pins (the browser refuses another), then starts the same versioned, immutable URL.
  async function startWorker() {
    var pinned = await fetch(msg.worker, { integrity: msg.workerIntegrity,
                                           credentials: "same-origin" });
    await pinned.arrayBuffer();
    var w = new Worker(msg.worker);
    w.onmessage = function (ev) { answer(ev.data.id, ev.data); };
    w.onerror = function () {  // it did not load or run: nothing waits for it forever
      Object.keys(calls).forEach(function (id) { answer(id, { kind: "failed" }); });
    };
    worker = w;
    var init = await ask({ op: "init", openpgp: msg.openpgp, integrity: msg.openpgpIntegrity,
                           keys: lockedKeys });
    if (init.kind !== "ready") { throw new Error("the reader did not start"); }
    root.dataset.ready = "1";  // for tests and the bench: scripts loaded, checked, started
  }

  function answer(id, data) {
    var done = calls[id];
    delete calls[id];
    if (done) { done(data); }
  }

  function ask(message) {
    return new Promise(function (resolve) {
      message.id = ++nextCall;
      calls[message.id] = resolve;
      worker.postMessage(message);
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("button.read"), function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { start(button); });
  });

  function show(el, text) { el.textContent = text; el.hidden = !text; }

  function failed() { show(busy, ""); show(error, msg.msgFailed); }  // e.g. the network

  function start(button) {
    target = button;
    root.hidden = false;
    list.hidden = true;
    show(error, "");
    if (keys) { open().catch(failed); return; }
    opened.hidden = true;
    unlockForm.hidden = false;
    document.getElementById("passphrase").focus();
  }

  function backToList() {
    clearOpened();
    root.hidden = true;
    list.hidden = false;
    if (target) { target.focus(); }
  }

  unlockForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var field = document.getElementById("passphrase");
    var passphrase = field.value;
    show(error, "");
    show(busy, msg.msgBusy);
    ready.then(function () { return ask({ op: "unlock", passphrase: passphrase }); })
      .then(function (got) {
        field.value = "";
        if (got.kind !== "unlocked") {
          show(busy, "");
          show(error, got.kind === "wrong" ? msg.msgWrong : msg.msgFailed);
          return;
        }
        keys = true;
        touch();
        return open();
      }).catch(failed);
  });
  document.getElementById("back").addEventListener("click", backToList);
  document.getElementById("print-it").addEventListener("click", function () { window.print(); });
  document.getElementById("copy-all").addEventListener("click", function (ev) {
    copy(wholeText, ev.target);
  });

  function report(why) {
    var body = new FormData();
    body.append("csrf_token", document.getElementById("csrf").value);
    body.append("why", why);  // the kind of failure only, never content
    fetch(target.dataset.failed, { method: "POST", body: body, credentials: "same-origin" });
  }

  async function open() {
    unlockForm.hidden = true;
    opened.hidden = true;
    show(error, "");
    show(busy, msg.msgBusy);
    clearOpened();
    var got = await ask({ op: "open", url: target.dataset.url });
    if (got.kind !== "ok") {
      show(busy, "");
      if (got.kind === "earlier") {  // an earlier key of this account, still locked
        show(error, msg.msgEarlier);
        unlockForm.hidden = false;
        document.getElementById("passphrase").focus();
      } else if (got.kind === "not-for-key") {
        show(error, msg.msgNotForKey.replace("%(readers)s", target.dataset.readers));
        report("not-for-key");
      } else if (got.kind === "damaged") {
        show(error, msg.msgDamaged);
        report("damaged");
      } else {
        show(error, msg.msgFailed);
      }
      return;
    }
    performance.mark("formrelay:decrypted");  // the bench reads these marks
    try {
      render(got);
      performance.mark("formrelay:shown");
    } catch (e) {
      show(busy, "");
      show(error, msg.msgFailed);
      return;
    }
    show(busy, "");
    opened.hidden = false;
    document.getElementById("opened-title").focus();
  }

  // -- showing it: text only, never markup ---------------------------------------------
  function shown(value) {
    if (value === true) { return msg.yes; }
    if (value === false) { return msg.no; }
    if (Array.isArray(value)) { return value.length ? value.map(shown).join(", ") : "-"; }
    if (value === null || value === undefined || value === "") { return "-"; }
    var date = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(value));
    if (date) { return date[3] + "-" + date[2] + "-" + date[1]; }  // Dutch: dd-mm-jjjj
    return String(value);
  }

  function when(iso) {
    return new Intl.DateTimeFormat("nl-NL", { dateStyle: "long", timeStyle: "short",
                                              timeZone: "Europe/Amsterdam" }).format(new Date(iso));
  }

  function button(label, onClick) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "link copy no-print";
    b.textContent = label;
    b.addEventListener("click", onClick);
    return b;
  }

  function copy(text, el) {
    navigator.clipboard.writeText(text).then(function () {
      var was = el.textContent;
      el.textContent = msg.msgCopied;
      setTimeout(function () { el.textContent = was; }, 1500);
    });
  }

  function render(got) {
    var data = got.answers;
    var files = got.files;
    wholeText = got.text;
    document.getElementById("opened-title").textContent = data.title;
    document.getElementById("opened-title").tabIndex = -1;
    document.getElementById("opened-meta").textContent = data.reference + " · " + when(data.received_at);
    var dl = document.getElementById("opened-answers");
    Object.keys(data.answers).forEach(function (field) {
      var dt = document.createElement("dt");
      dt.textContent = data.labels[field] || field;
      var dd = document.createElement("dd");
      var text = shown(data.answers[field]);
      var span = document.createElement("span");
      span.className = "answer";
      span.textContent = text;
      dd.appendChild(span);
      dd.appendChild(button(document.getElementById("copy-all").dataset.one || "⧉",
                            function (ev) { copy(text, ev.target); }));
      dl.appendChild(dt);
      dl.appendChild(dd);
    });
    var ul = document.getElementById("opened-files");
    files.forEach(function (f) {
      var url = URL.createObjectURL(new Blob([f.bytes], { type: "application/octet-stream" }));
      blobs.push(url);
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = url;
      a.download = f.name;
      a.textContent = f.name + " (" + Math.max(1, Math.round(f.bytes.byteLength / 1024)) + " KB)";
      li.appendChild(a);
      ul.appendChild(li);
    });
  }

  function clearOpened() {
    ["opened-answers", "opened-files", "opened-title", "opened-meta"].forEach(function (id) {
      document.getElementById(id).textContent = "";
    });
    blobs.forEach(function (url) { URL.revokeObjectURL(url); });
    blobs = [];
    wholeText = "";
  }

  // -- the idle lock: the same time as the session's ----------------------------------
  function lock(ev) {
    if (worker) {  // the unlocked keys end with it; a fresh one waits for the passphrase
      worker.terminate();
      worker = null;
      delete root.dataset.ready;
      if (!ev || ev.type !== "pagehide") {
        ready = startWorker();
        ready.catch(function () {});
      }
    }
    keys = false;
    clearOpened();
    opened.hidden = true;
    if (!root.hidden) {
      unlockForm.hidden = false;
      show(error, msg.msgLocked);
    }
  }

  function touch() {
    if (!keys) { return; }
    clearTimeout(idleTimer);
    idleTimer = setTimeout(lock, Number(msg.idleMinutes) * 60 * 1000);
  }
  ["keydown", "pointerdown", "scroll"].forEach(function (name) {
    window.addEventListener(name, touch, { passive: true });
  });
  window.addEventListener("pagehide", lock);
  window.addEventListener("pageshow", function (ev) {  // back from the browser's cache
    if (ev.persisted && !worker) {
      ready = startWorker();
      ready.catch(function () {});
    }
  });
}());
