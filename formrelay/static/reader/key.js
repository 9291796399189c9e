/* The browser reader: make the clinician's OpenPGP key in this page (OpenPGP.js).
 *
 * Only three things leave the browser: the public key, the private key locked by the
 * reading passphrase, and a second copy locked by a random recovery key. The passphrase
 * and the recovery key never do; the recovery key is shown once, on the printable
 * recovery sheet. Curve25519 in its classic (v4, "legacy") form: GnuPG 2.2, RNP
 * (Thunderbird), Sequoia and Proton all read it; the newer Ed25519/X25519 algorithms
 * (RFC 9580) are not read by GnuPG 2.2. No inline script: the CSP forbids it. */
(function () {
  "use strict";
  var root = document.getElementById("make-key");
  if (!root) { return; }
  var unsupported = document.getElementById("unsupported");
  if (!window.crypto || !window.crypto.subtle || typeof window.openpgp === "undefined" ||
      !window.fetch) {
    return;  // the notice stays: which browsers work, and the .eml/.asc downloads
  }
  unsupported.hidden = true;
  root.hidden = false;
  var form = document.getElementById("key-form");
  var error = document.getElementById("key-error");
  var busy = document.getElementById("key-busy");
  var msg = root.dataset;

  // 32 characters of 5 bits: 160 random bits, without 0/O and 1/I/L to misread
  var ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";
  function recoveryKey() {
    var out = [];
    var bytes = new Uint8Array(32);
    window.crypto.getRandomValues(bytes);
    for (var i = 0; i < bytes.length; i++) {
      out.push(ALPHABET[bytes[i] % 31]);  // 256 % 31 != 0: a bias of < 1 %, ignored
    }
    var groups = [];
    for (var j = 0; j < out.length; j += 4) { groups.push(out.slice(j, j + 4).join("")); }
    return groups.join("-");
  }

  function grouped(fpr) {
    return fpr.toUpperCase().match(/.{1,4}/g).join(" ");
  }

  function fail(text) {
    busy.hidden = true;
    error.textContent = text;
    error.hidden = false;
    form.querySelector("button").disabled = false;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    error.hidden = true;
    var pass = document.getElementById("passphrase").value;
    var again = document.getElementById("repeat").value;
    if (pass.length < 12) { fail(msg.msgShort); return; }
    if (pass !== again) { fail(msg.msgSame); return; }
    form.querySelector("button").disabled = true;
    busy.textContent = msg.msgBusy;
    busy.hidden = false;
    make(pass).catch(function () { fail(msg.msgFailed); });
  });

  async function make(pass) {
    var openpgp = window.openpgp;
    var made = await openpgp.generateKey({
      type: "ecc", curve: "curve25519Legacy", format: "object",
      userIDs: [{ name: msg.name, email: msg.email || undefined }]
    });
    var recovery = recoveryKey();
    var locked = await openpgp.encryptKey({ privateKey: made.privateKey, passphrase: pass });
    var spare = await openpgp.encryptKey({ privateKey: made.privateKey, passphrase: recovery });
    var body = new FormData();
    body.append("csrf_token", document.getElementById("csrf").value);
    body.append("fingerprint", made.privateKey.getFingerprint().toUpperCase());
    body.append("public_key", made.publicKey.armor());
    body.append("locked_key", locked.armor());
    body.append("recovery_locked_key", spare.armor());
    var resp = await fetch(window.location.pathname, {
      method: "POST", body: body, credentials: "same-origin", cache: "no-store"
    });
    var answer = await resp.json();
    if (!answer.ok) { fail(answer.error || msg.msgFailed); return; }
    document.getElementById("passphrase").value = "";
    document.getElementById("repeat").value = "";
    document.getElementById("fingerprint").textContent = grouped(made.privateKey.getFingerprint());
    document.getElementById("recovery-key").textContent = recovery;
    document.getElementById("activate-form").action = answer.activate;
    root.hidden = true;
    document.getElementById("sheet").hidden = false;
  }

  document.getElementById("print").addEventListener("click", function () { window.print(); });
}());
