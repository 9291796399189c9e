// Make a reader key as the page does (static/reader/key.js), with the vendored OpenPGP.js,
// for the server-side tests: node openpgp_make.js <openpgp.min.js> <passphrase> <recovery>.
// Prints JSON: fingerprint, public_key, locked_key, recovery_locked_key, open_key (NOT
// locked: what the server must refuse).
const fs = require("fs");
const vm = require("vm");
vm.runInThisContext(fs.readFileSync(process.argv[2], "utf8"));
(async () => {
  const made = await openpgp.generateKey({
    type: "ecc", curve: "curve25519Legacy", format: "object",
    userIDs: [{ name: "anna", email: "anna@praktijk.test" }]
  });
  const locked = await openpgp.encryptKey({ privateKey: made.privateKey, passphrase: process.argv[3] });
  const spare = await openpgp.encryptKey({ privateKey: made.privateKey, passphrase: process.argv[4] });
  process.stdout.write(JSON.stringify({
    fingerprint: made.privateKey.getFingerprint().toUpperCase(),
    public_key: made.publicKey.armor(), locked_key: locked.armor(),
    recovery_locked_key: spare.armor(), open_key: made.privateKey.armor()
  }));
})();
