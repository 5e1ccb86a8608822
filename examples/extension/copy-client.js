#!/usr/bin/env node
// An extension can only load files from its own folder, so the client module is copied
// in before the extension is loaded: `node examples/extension/copy-client.js [folder]`
// (default: this folder; the copy is git-ignored, the source stays client/).
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const source = path.resolve(__dirname, '..', '..', 'client', 'gateway-client.mjs');
const target = path.join(path.resolve(process.argv[2] ?? __dirname), 'gateway-client.mjs');
fs.copyFileSync(source, target);
