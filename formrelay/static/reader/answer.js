/* The clinician's answer, encrypted in this browser (OpenPGP.js).
 *
 * The page carries the patient's reply certificate (one per submission; its private
 * half opens only with the patient's reply code). On "Encrypt and send" the text and
 * any files become one MIME message (the text, then each file as an attachment), which
 * is encrypted to that certificate alone and put in the form's hidden file field; the
 * text and file fields are emptied and lose their names, so the post carries only the
 * ciphertext. The files' types are checked by their first bytes first, by the same
 * rule as the server's (intake/forms.py sniff_upload). Without this script (or without
 * WebCrypto) the form posts the plain text and files and the server encrypts them at
 * once. No inline script (CSP); nothing is stored in the browser. */
(function () {
  "use strict";
  var form = document.getElementById("answer-form");
  var keyTag = document.getElementById("answer-key");
  if (!form || !keyTag || typeof window.openpgp === "undefined" || !window.crypto ||
      !window.crypto.subtle || typeof DataTransfer === "undefined") {
    return; // the server encrypts the plain post
  }
  var openpgp = window.openpgp;
  var data = form.dataset;
  var text = document.getElementById("answer");
  var input = document.getElementById("answer-files");
  var sealed = document.getElementById("answer-sealed");
  var problem = document.getElementById("answer-problem");
  var button = form.querySelector("button[type=submit]");
  var types = data.types.split(" ");
  var where = document.getElementById("answer-where");
  var key = openpgp.readKey({ armoredKey: JSON.parse(keyTag.textContent) });
  where.textContent = where.dataset.browser;

  function Refused(message) { this.message = message; }

  function startsWith(bytes, prefix) {
    for (var i = 0; i < prefix.length; i++) { if (bytes[i] !== prefix[i]) return false; }
    return true;
  }
  function ascii(bytes, from, to) { return String.fromCharCode.apply(null, bytes.slice(from, to)); }
  function sniff(ext, b) {
    switch (ext) {
      case "pdf": return ascii(b, 0, 5) === "%PDF-";
      case "png": return startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      case "jpg": case "jpeg": return startsWith(b, [0xff, 0xd8, 0xff]);
      case "heic": return ascii(b, 4, 8) === "ftyp" &&
        ["heic", "heix", "mif1", "msf1"].indexOf(ascii(b, 8, 12)) >= 0;
      case "docx": case "odt": return startsWith(b, [0x50, 0x4b, 0x03, 0x04]);
      case "txt": return b.indexOf(0) < 0;
      default: return false;
    }
  }

  /* base64 in lines of 76, as MIME wants, without one huge string of the whole file. */
  function base64Lines(bytes) {
    var lines = [];
    for (var i = 0; i < bytes.length; i += 57) {
      lines.push(btoa(String.fromCharCode.apply(null, bytes.subarray(i, i + 57))));
    }
    return lines.join("\r\n");
  }
  /* RFC 2231: the file's name in UTF-8, percent-encoded. */
  function encodedName(name) {
    return encodeURIComponent(name).replace(/['()*!]/g, function (c) {
      return "%" + c.charCodeAt(0).toString(16).toUpperCase();
    });
  }

  async function mime(body, files) {
    var boundary = "formrelay-" + Array.prototype.map.call(
      crypto.getRandomValues(new Uint8Array(12)), function (x) { return x.toString(16); }).join("");
    var parts = ["MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"" + boundary +
                 "\"\r\n\r\n--" + boundary + "\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n" +
                 "Content-Transfer-Encoding: base64\r\n\r\n" +
                 base64Lines(new TextEncoder().encode(body)) + "\r\n"];
    for (var i = 0; i < files.length; i++) {
      var bytes = new Uint8Array(await files[i].arrayBuffer());
      parts.push("--" + boundary + "\r\nContent-Type: application/octet-stream\r\n" +
                 "Content-Disposition: attachment; filename*=UTF-8''" +
                 encodedName(files[i].name) + "\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
                 base64Lines(bytes) + "\r\n");
    }
    parts.push("--" + boundary + "--\r\n");
    return new TextEncoder().encode(parts.join(""));
  }

  async function check(files) {
    if (files.length > parseInt(data.maxFiles, 10)) throw new Refused(data.tooMany);
    var total = 0;
    for (var i = 0; i < files.length; i++) {
      total += files[i].size;
      var name = files[i].name;
      var ext = name.indexOf(".") >= 0 ? name.split(".").pop().toLowerCase() : "";
      var head = new Uint8Array(await files[i].slice(0, 64).arrayBuffer());
      if (!files[i].size || types.indexOf(ext) < 0 || !sniff(ext, head)) {
        throw new Refused(data.badType.replace("%(name)s", name));
      }
    }
    if (total > parseInt(data.maxBytes, 10)) throw new Refused(data.tooLarge);
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    problem.hidden = true;
    button.disabled = true;
    try {
      var files = Array.prototype.slice.call(input.files);
      await check(files);
      var message = await openpgp.createMessage({ binary: await mime(text.value.trim(), files) });
      // The reply key advertises SEIPD v2 (Sequoia made it), which OpenPGP.js would then
      // write and GnuPG cannot read: a session key given without an AEAD mode makes it
      // write the classic SEIPD v1 packet, which every client reads (and the server
      // checks for).
      var ciphertext = await openpgp.encrypt({
        message: message, encryptionKeys: await key, format: "binary",
        sessionKey: { data: crypto.getRandomValues(new Uint8Array(32)), algorithm: "aes256" } });
      var box = new DataTransfer();
      box.items.add(new File([ciphertext], "answer.pgp", { type: "application/pgp-encrypted" }));
      sealed.files = box.files;
      // the plaintext stays here: the fields lose their names and contents
      text.removeAttribute("name");
      text.required = false;
      input.removeAttribute("name");
      input.value = "";
      form.submit(); // no submit event: the post goes as it is now
    } catch (e) {
      problem.textContent = e instanceof Refused ? e.message : data.failed;
      problem.hidden = false;
      button.disabled = false;
    }
  });
}());
