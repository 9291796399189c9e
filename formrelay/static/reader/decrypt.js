/* The browser reader's decryption, in a Web Worker (started by read.js).
 *
 * Decrypting a 20 MB upload on the page's own thread froze the page for most of a
 * second between frames; here it runs beside the page, which keeps drawing. This worker
 * holds the unlocked keys (its memory only; the page ends the worker to lock them) and
 * answers the page's messages:
 *   init   {openpgp, integrity, keys}  load OpenPGP.js, read the locked keys
 *   unlock {passphrase}                 unlock the keys this passphrase opens
 *   open   {url}                        fetch a ciphertext and decrypt it
 * An answer names its kind only ("ok" with the decrypted bytes, transferred to the page;
 * "wrong", "earlier", "not-for-key", "damaged", "failed"): the page reports failures to
 * the server by that kind, never with content.
 *
 * Subresource Integrity: a worker's scripts carry no integrity attribute, so the page
 * checks this file's hash before it starts the worker, and this worker checks
 * OpenPGP.js's hash (the value the page has in its own SRI-checked script tag) by
 * fetching it with `integrity` before importScripts runs the same versioned, immutable
 * URL. Anything that does not match is not run (docs/threat-model.md). */
"use strict";
var lockedKeys = [];
var keys = [];

self.onmessage = function (ev) {
  var m = ev.data;
  var job = { init: init, unlock: unlock, open: open }[m.op];
  Promise.resolve().then(function () { return job(m); }).then(function (answer) {
    answer.id = m.id;
    self.postMessage(answer, answer.bytes ? [answer.bytes] : []);
  }, function () {
    self.postMessage({ id: m.id, kind: "failed" });
  });
};

async function init(m) {
  var pinned = await fetch(m.openpgp, { integrity: m.integrity, credentials: "same-origin" });
  await pinned.arrayBuffer();  // rejected above when the hash is not the pinned one
  importScripts(m.openpgp);
  lockedKeys = await Promise.all(m.keys.map(function (k) {
    return openpgp.readPrivateKey({ armoredKey: k.locked_key });
  }));
  return { kind: "ready" };
}

function unlocked(fingerprint) {
  return keys.some(function (k) { return k.getFingerprint() === fingerprint; });
}

// Keys keep the passphrase they were made with: after a key change the earlier key may
// have another one, so a second passphrase adds the keys it opens.
async function unlock(m) {
  var got = 0;
  for (var i = 0; i < lockedKeys.length; i++) {
    if (unlocked(lockedKeys[i].getFingerprint())) { continue; }
    try {
      keys.push(await openpgp.decryptKey({ privateKey: lockedKeys[i], passphrase: m.passphrase }));
      got++;
    } catch (e) { /* not this key's passphrase */ }
  }
  return { kind: got ? "unlocked" : "wrong" };
}

function forKeys(message, candidates) {
  var wanted = message.getEncryptionKeyIDs();
  return candidates.some(function (key) {
    return key.getKeys().some(function (k) {
      return wanted.some(function (id) { return id.equals(k.getKeyID()); });
    });
  });
}

async function open(m) {
  var resp = await fetch(m.url, { credentials: "same-origin", cache: "no-store" });
  if (!resp.ok) { return { kind: "failed" }; }
  try {
    var message = await openpgp.readMessage({
      armoredMessage: resp.body.pipeThrough(new TextDecoderStream())
    });
    if (!forKeys(message, keys)) {  // an earlier key of this account, still locked?
      return { kind: forKeys(message, lockedKeys) ? "earlier" : "not-for-key" };
    }
    var result = await openpgp.decrypt({ message: message, decryptionKeys: keys,
                                         format: "binary" });
    return { kind: "ok", bytes: await new Response(result.data).arrayBuffer() };
  } catch (e) {
    return { kind: "damaged" };
  }
}
