/* The recovery sheet at work: a forgotten reading passphrase replaced, nothing lost.
 *
 * The server hands out the second locked copy of each key (each request counts as an
 * attempt; after too many it pauses, as logins do). The recovery key opens it here, in
 * the page; the key is locked again with the new reading passphrase and only that locked
 * copy goes back. The recovery key and both passphrases never leave the browser. */
(function () {
  "use strict";
  var root = document.getElementById("recover");
  if (!root || !window.crypto || !window.crypto.subtle || typeof window.openpgp === "undefined") {
    return;
  }
  var openpgp = window.openpgp;
  var msg = root.dataset;
  var form = document.getElementById("recover-form");
  var error = document.getElementById("recover-error");
  var done = document.getElementById("recover-done");

  function show(el, text) { el.textContent = text; el.hidden = !text; }

  function post(url, fields) {
    var body = new FormData();
    body.append("csrf_token", document.getElementById("recover-csrf").value);
    Object.keys(fields).forEach(function (k) { body.append(k, fields[k]); });
    return fetch(url, { method: "POST", body: body, credentials: "same-origin",
                        cache: "no-store" }).then(function (r) { return r.json(); });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    show(error, "");
    show(done, "");
    var recovery = document.getElementById("recovery-key-input").value.trim().toUpperCase();
    var pass = document.getElementById("new-passphrase").value;
    if (pass.length < 12) { show(error, msg.msgShort); return; }
    if (pass !== document.getElementById("new-repeat").value) { show(error, msg.msgSame); return; }
    recover(recovery, pass).catch(function () { show(error, msg.msgFailed); });
  });

  async function recover(recovery, pass) {
    var answer = await post(window.location.pathname + "recovery", {});
    if (!answer.ok) { show(error, answer.error); return; }
    var changed = 0;
    for (var i = 0; i < answer.keys.length; i++) {
      var copy = answer.keys[i];
      var key = await openpgp.readPrivateKey({ armoredKey: copy.recovery_locked_key });
      var open;
      try {
        open = await openpgp.decryptKey({ privateKey: key, passphrase: recovery });
      } catch (e) { continue; }  // another key's sheet
      var locked = await openpgp.encryptKey({ privateKey: open, passphrase: pass });
      var saved = await post(copy.relock, { locked_key: locked.armor() });
      if (!saved.ok) { show(error, saved.error || msg.msgFailed); return; }
      changed++;
    }
    if (!changed) { show(error, msg.msgWrong); return; }
    form.reset();
    show(done, msg.msgDone);
  }
}());
