/* The browser reader's decryption, in a Web Worker (started by read.js).
 *
 * Decrypting a 20 MB upload on the page's own thread froze the page for most of a
 * second between frames; here it runs beside the page, which keeps drawing. This worker
 * holds the unlocked keys (its memory only; the page ends the worker to lock them) and
 * answers the page's messages:
 *   init   {openpgp, integrity, keys}  load OpenPGP.js, read the locked keys
 *   unlock {passphrase}                 unlock the keys this passphrase opens
 *   open   {url}                        fetch a ciphertext and decrypt it
 * An answer names its kind ("ok" with the message taken apart here too: its text, the
 * answers, and each upload's bytes, transferred to the page; "wrong", "earlier",
 * "not-for-key", "damaged", "failed"): the page reports failures to the server by that
 * kind only, never with content.
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
    self.postMessage(answer, (answer.files || []).map(function (f) { return f.bytes; }));
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
    var bytes = new Uint8Array(await new Response(result.data).arrayBuffer());
  } catch (e) {
    return { kind: "damaged" };
  }
  return unpack(parseMime(bytes));
}

// -- MIME: the multipart/mixed message formrelay encrypts (intake/payload.py) ----------
var ascii = new TextDecoder("utf-8");

function unpack(parts) {
  var out = { kind: "ok", text: "", answers: null, files: [] };
  parts.forEach(function (p) {
    var type = (p.headers["content-type"] || "").split(";")[0].trim().toLowerCase();
    var encoding = (p.headers["content-transfer-encoding"] || "").toLowerCase();
    var name = param(p.headers["content-disposition"], "filename");
    if (type === "text/plain" && !name) {
      out.text = encoding === "quoted-printable" ? quotedPrintable(p.body) : ascii.decode(p.body);
    } else if (name === "answers.json") {
      out.answers = JSON.parse(ascii.decode(base64(p.body)));
    } else if (name) {  // its own buffer: handed over to the page without a copy
      out.files.push({ name: name, type: type,
                       bytes: (encoding === "base64" ? base64(p.body) : p.body.slice()).buffer });
    }
  });
  return out;
}

function indexOf(bytes, needle, from) {
  var first = needle[0];
  for (var i = bytes.indexOf(first, from); i !== -1 && i <= bytes.length - needle.length;
       i = bytes.indexOf(first, i + 1)) {
    var j = 1;
    while (j < needle.length && bytes[i + j] === needle[j]) { j++; }
    if (j === needle.length) { return i; }
  }
  return -1;
}

function headers(text) {
  var out = {};
  text.replace(/\r\n[ \t]+/g, " ").split("\r\n").forEach(function (line) {
    var at = line.indexOf(":");
    if (at > 0) { out[line.slice(0, at).toLowerCase()] = line.slice(at + 1).trim(); }
  });
  return out;
}

function param(value, name) {
  var star = new RegExp(name + "\\*=(?:utf-8|UTF-8)''([^;]+)").exec(value || "");
  if (star) { return decodeURIComponent(star[1]); }
  var plain = new RegExp(name + "=\"?([^\";]+)\"?").exec(value || "");
  return plain ? plain[1] : "";
}

var CRLF2 = new Uint8Array([13, 10, 13, 10]);

function parseMime(bytes) {
  var end = indexOf(bytes, CRLF2, 0);
  var top = headers(ascii.decode(bytes.subarray(0, end)));
  var boundary = new TextEncoder().encode("\r\n--" + param(top["content-type"], "boundary"));
  var parts = [];
  var at = indexOf(bytes, boundary, end);
  while (at !== -1) {
    var start = at + boundary.length;
    if (bytes[start] === 45 && bytes[start + 1] === 45) { break; }  // the closing "--"
    var next = indexOf(bytes, boundary, start);
    var part = bytes.subarray(start + 2, next === -1 ? bytes.length : next);
    var split = indexOf(part, CRLF2, 0);
    parts.push({ headers: headers(ascii.decode(part.subarray(0, split))),
                 body: part.subarray(split + 4) });
    at = next;
  }
  return parts;
}

// A 20 MB upload is 27 MB of base64: decoded a slice at a time (no second copy of it all
// as one string).
var SLICE = 1 << 20;

function base64(body) {
  var out = new Uint8Array(Math.floor(body.length * 3 / 4) + 3);
  var n = 0;
  var carry = "";
  for (var i = 0; i < body.length; i += SLICE) {
    var text = carry + ascii.decode(body.subarray(i, i + SLICE)).replace(/[\r\n]/g, "");
    var keep = i + SLICE < body.length ? text.length % 4 : 0;
    carry = text.slice(text.length - keep);
    var raw = atob(text.slice(0, text.length - keep));
    for (var j = 0; j < raw.length; j++) { out[n++] = raw.charCodeAt(j); }
  }
  return out.slice(0, n);
}

function quotedPrintable(body) {
  var text = ascii.decode(body).replace(/=\r\n/g, "");
  var out = [];
  for (var i = 0; i < text.length; i++) {
    if (text[i] === "=" && /^[0-9A-F]{2}$/i.test(text.substr(i + 1, 2))) {
      out.push(parseInt(text.substr(i + 1, 2), 16));
      i += 2;
    } else {
      out.push(text.charCodeAt(i));
    }
  }
  return new TextDecoder("utf-8").decode(new Uint8Array(out));
}
