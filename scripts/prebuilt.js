'use strict';
// The pack and install scripts agree with index.js on where the carried binary lives.
module.exports = require('../lib/prebuilt');
