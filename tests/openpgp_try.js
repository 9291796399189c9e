// Which of the candidate passphrases unlock a locked private key? Run by tests/reader.py
// with the vendored OpenPGP.js (the very file the browser gets): node openpgp_try.js
// <openpgp.min.js> <input.json holding {"key": armoured, "candidates": [...]}>.
const fs = require("fs");
const vm = require("vm");
vm.runInThisContext(fs.readFileSync(process.argv[2], "utf8"));
const input = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
(async () => {
  const key = await openpgp.readPrivateKey({ armoredKey: input.key });
  const opened = [];
  for (const candidate of input.candidates) {
    try {
      await openpgp.decryptKey({ privateKey: key, passphrase: candidate });
      opened.push(candidate);
    } catch (e) { /* wrong passphrase: the expected answer */ }
  }
  process.stdout.write(JSON.stringify(opened));
})();
