'use strict';
// The v1 user's guide, when this checkout has it: GUIDE_MD names the file (.ci/run sets it
// when the guide sits beside the repository). Its code blocks then run as tests. Without
// GUIDE_MD those tests are skipped, saying why; the same usage is tested in the repository's
// own words by v1-usage.test.js, so a clean clone still covers it. A GUIDE_MD that names a
// missing file is an error, never a skip.
const assert = require('node:assert/strict');
const fs = require('node:fs');

const guidePath = process.env.GUIDE_MD || null;
if (guidePath && !fs.existsSync(guidePath)) {
  throw new Error(`GUIDE_MD is ${guidePath}, but there is no file there: point it at the v1 guide, or unset it.`);
}
const guide = guidePath ? fs.readFileSync(guidePath, 'utf8') : null;

/** `skip` for a test that runs the guide's examples: false when the guide is here, else why not. */
const guideSkip = guide === null ? 'the v1 guide is not in this checkout (set GUIDE_MD to its path to run its examples)' : false;

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The first `language` block after the heading that starts with `title` (any level; "Round-Robin (Default)" matches "Round-Robin"). */
function guideBlock(title, language = 'javascript') {
  assert.ok(guide !== null, guideSkip);
  const heading = new RegExp(`^#{1,6} ${escapeRe(title)}(?!\\w).*$`, 'm').exec(guide);
  assert.ok(heading, `guide has a section "${title}"`);
  const fence = guide.indexOf('```' + language, heading.index);
  assert.ok(fence > heading.index, `section "${title}" has a ${language} block`);
  const start = guide.indexOf('\n', fence) + 1;
  return guide.slice(start, guide.indexOf('\n```', start));
}

module.exports = { guide, guideBlock, guideSkip };
