'use strict';
// Messages of the install that the user must see. npm hides the output of a
// dependency's install script unless it fails, so a message that explains a long
// build also goes to the terminal the user typed `npm install` in, when there is one.
const fs = require('node:fs');

function tell(line) {
  process.stderr.write(`${line}\n`);
  if (process.stderr.isTTY) return;
  try {
    const fd = fs.openSync('/dev/tty', 'w');
    try {
      fs.writeSync(fd, `${line}\n`);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // No terminal (CI, Docker build): stderr is all there is.
  }
}

module.exports = { tell };
