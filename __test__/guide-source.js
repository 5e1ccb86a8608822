'use strict';
// The user's guide (../shared/seed/GUIDE.md, or GUIDE_MD): its code blocks are run as
// tests, so a missing guide is an error, never a skip.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const guidePath = process.env.GUIDE_MD || path.resolve(__dirname, '../../shared/seed/GUIDE.md');
if (!fs.existsSync(guidePath)) {
  throw new Error(`The guide's examples are tests, but the guide is not at ${guidePath}: set GUIDE_MD to its path.`);
}
const guide = fs.readFileSync(guidePath, 'utf8');

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The first `language` block after the heading that starts with `title` (any level; "Round-Robin (Default)" matches "Round-Robin"). */
function guideBlock(title, language = 'javascript') {
  const heading = new RegExp(`^#{1,6} ${escapeRe(title)}(?!\\w).*$`, 'm').exec(guide);
  assert.ok(heading, `guide has a section "${title}"`);
  const fence = guide.indexOf('```' + language, heading.index);
  assert.ok(fence > heading.index, `section "${title}" has a ${language} block`);
  const start = guide.indexOf('\n', fence) + 1;
  return guide.slice(start, guide.indexOf('\n```', start));
}

module.exports = { guide, guideBlock };
