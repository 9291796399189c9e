/* The upload page: encrypt each file in this browser and send the ciphertext in chunks.
 *
 * Each file is read as a stream, encrypted with OpenPGP.js (vendor/openpgp-*.min.js) to
 * the practice's public keys that came with the page (one OpenPGP message per file, the
 * file's name inside it), and the ciphertext goes to the server 1 MB at a time:
 * PATCH at an Upload-Offset with the chunk's SHA-256. A dropped connection is retried
 * with growing pauses, asking the server first (HEAD) where the file ends, so a chunk
 * that arrived is never sent twice and one that did not is sent again. The server
 * never receives a byte in clear.
 *
 * After a reload of the page (or a closed tab restored), the patient picks the files
 * again: files that were sent whole are recognised (by name, size and date, kept in
 * this tab's sessionStorage with their upload id, nothing of their content) and not
 * sent twice; the file that was cut off is dropped on the server (DELETE) and sent
 * again from its start. Its encryption cannot continue where it stopped: OpenPGP.js
 * keeps the state of a message's encryption (the CFB stream and the SHA-1 of the
 * integrity check over everything before) in the page's memory, which a reload ends,
 * and a file must stay one message that every client reads (SEIPD v1). Without this script (or without streams and
 * WebCrypto) the form posts the files plainly and the server encrypts them.
 */
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.openpgp || !window.ReadableStream || !window.crypto ||
      !window.crypto.subtle || !window.fetch) {
    return; // the plain form post remains
  }
  var api = form.getAttribute("data-api");
  var types = form.getAttribute("data-types").split(" ");
  var chunkSize = parseInt(form.getAttribute("data-chunk"), 10);
  var texts = JSON.parse(document.getElementById("upload-texts").textContent);
  var armored = JSON.parse(document.getElementById("upload-keys").textContent);
  var input = document.getElementById("upload-files");
  var list = document.getElementById("upload-list");
  var status = document.getElementById("upload-status");
  var button = document.getElementById("upload-send");
  var keys = Promise.all(armored.map(function (a) {
    return window.openpgp.readKey({ armoredKey: a });
  }));
  // the link's id names it (not its secret, which stays in the address only)
  var memoryKey = "formrelay-upload " + api.split("/")[2].split(".")[0];

  /* What this tab sent through this link: file -> {id, sent}. */
  function remembered() {
    try { return JSON.parse(window.sessionStorage.getItem(memoryKey) || "{}"); }
    catch (e) { return {}; }
  }
  function remember(file, id, sent) {
    try {
      var all = remembered();
      all[fileKey(file)] = { id: id, sent: sent };
      window.sessionStorage.setItem(memoryKey, JSON.stringify(all));
    } catch (e) { /* no storage: a reload sends everything again */ }
  }
  function fileKey(file) { return [file.name, file.size, file.lastModified].join("|"); }

  function Fatal(message) { this.message = message; }

  function startsWith(bytes, prefix) {
    for (var i = 0; i < prefix.length; i++) { if (bytes[i] !== prefix[i]) return false; }
    return true;
  }
  function ascii(bytes, from, to) { return String.fromCharCode.apply(null, bytes.slice(from, to)); }

  /* The same first-bytes rule as the server's (intake/forms.py sniff_upload). */
  function sniff(ext, b) {
    switch (ext) {
      case "pdf": return ascii(b, 0, 5) === "%PDF-";
      case "png": return startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      case "jpg": case "jpeg": return startsWith(b, [0xff, 0xd8, 0xff]);
      case "gif": return ascii(b, 0, 6) === "GIF87a" || ascii(b, 0, 6) === "GIF89a";
      case "heic": return ascii(b, 4, 8) === "ftyp" &&
        ["heic", "heix", "mif1", "msf1"].indexOf(ascii(b, 8, 12)) >= 0;
      case "docx": case "odt": return startsWith(b, [0x50, 0x4b, 0x03, 0x04]);
      case "txt": return b.indexOf(0) < 0;
      default: return false;
    }
  }

  function hex(buffer) {
    return Array.prototype.map.call(new Uint8Array(buffer), function (x) {
      return ("0" + x.toString(16)).slice(-2);
    }).join("");
  }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }
  var lang = "?lang=" + encodeURIComponent(form.getAttribute("data-lang"));
  function call(method, url, body, headers) {
    return fetch(url + lang, { method: method, body: body, headers: headers || {},
                        credentials: "omit", cache: "no-store" });
  }
  async function errorOf(response) {
    try { return (await response.json()).error || texts.failed; } catch (e) { return texts.failed; }
  }

  /* Send one chunk at `offset`; resolves to the new offset. */
  async function sendChunk(url, offset, chunk, row) {
    var sum = hex(await crypto.subtle.digest("SHA-256", chunk));
    var end = offset + chunk.byteLength;
    for (var attempt = 0; ; attempt++) {
      try {
        var r = await call("PATCH", url, chunk, {
          "Upload-Offset": String(offset), "Upload-Checksum": "sha256 " + sum,
          "Content-Type": "application/offset+octet-stream" });
        if (r.status === 204) { row.state.textContent = texts.sending; return end; }
        if (r.status === 409) {
          var at = parseInt(r.headers.get("Upload-Offset"), 10);
          if (at === end) return end;
          if (at !== offset) throw new Fatal(texts.failed);
        } else if (r.status !== 460 && !(r.status >= 500 && r.status !== 503)) {
          throw new Fatal(await errorOf(r));
        }
      } catch (e) {
        if (e instanceof Fatal) throw e; // else: the network failed; try again
      }
      if (attempt >= 12) throw new Fatal(texts.failed);
      row.state.textContent = texts.retrying;
      await sleep(Math.min(20000, 300 * Math.pow(2, attempt)));
      try { // the chunk may have arrived before the connection dropped
        var h = await call("HEAD", url);
        if (h.ok && parseInt(h.headers.get("Upload-Offset"), 10) === end) return end;
      } catch (e) { /* still offline: the next attempt waits longer */ }
    }
  }

  async function upload(file, row) {
    var ext = file.name.indexOf(".") >= 0 ? file.name.split(".").pop().toLowerCase() : "";
    var head = new Uint8Array(await file.slice(0, 64).arrayBuffer());
    if (types.indexOf(ext) < 0 || !sniff(ext, head)) throw new Fatal(texts.type);
    var before = remembered()[fileKey(file)];
    if (before && before.sent) return; // sent whole before a reload: not twice
    if (before) { // cut off by a reload: drop what arrived, send it again from its start
      try { await call("DELETE", api + "/" + before.id); } catch (e) { /* gone already */ }
    }
    var created = await call("POST", api, JSON.stringify({ size: file.size }),
                             { "Content-Type": "application/json" });
    if (created.status !== 201) throw new Fatal(await errorOf(created));
    var id = (await created.json()).id;
    var url = api + "/" + id;
    remember(file, id, false);
    var message = await window.openpgp.createMessage({ binary: file.stream(),
                                                       filename: file.name });
    var encrypted = await window.openpgp.encrypt({ message: message,
                                                   encryptionKeys: await keys,
                                                   format: "binary" });
    var reader = encrypted.getReader();
    var buf = new Uint8Array(chunkSize), fill = 0, offset = 0, chunks = 0;
    async function flush() {
      offset = await sendChunk(url, offset, buf.slice(0, fill), row);
      chunks += 1;
      fill = 0;
      row.bar.value = Math.min(offset, row.bar.max);
    }
    for (;;) {
      var step = await reader.read();
      if (step.done) break;
      var v = step.value;
      while (v.length) {
        var n = Math.min(v.length, chunkSize - fill);
        buf.set(v.subarray(0, n), fill);
        fill += n;
        v = v.subarray(n);
        if (fill === chunkSize) await flush();
      }
    }
    if (fill) await flush();
    var done = await call("POST", url + "/done", JSON.stringify({ length: offset, chunks: chunks }),
                          { "Content-Type": "application/json" });
    if (!done.ok) throw new Fatal(await errorOf(done));
    remember(file, id, true);
    row.bar.value = row.bar.max;
  }

  function addRow(file) {
    var li = document.createElement("li");
    var name = document.createElement("span");
    name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = Math.max(1, file.size);
    bar.value = 0;
    bar.setAttribute("aria-label", file.name);
    var state = document.createElement("span");
    state.className = "state";
    state.textContent = texts.sending;
    li.appendChild(name); li.appendChild(bar); li.appendChild(state);
    list.appendChild(li);
    return { li: li, bar: bar, state: state };
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    var files = Array.prototype.slice.call(input.files);
    if (!files.length) { status.textContent = texts.choose; return; }
    button.disabled = true;
    var failed = 0;
    for (var i = 0; i < files.length; i++) {
      var row = addRow(files[i]);
      try {
        await upload(files[i], row);
        row.state.textContent = texts.sent;
        row.li.className = "sent";
      } catch (e) {
        failed += 1;
        row.state.textContent = e instanceof Fatal ? e.message : texts.failed;
        row.li.className = "failed";
      }
    }
    input.value = "";
    button.disabled = false;
    status.textContent = failed ? texts.failed : texts.all_sent;
  });
}());
