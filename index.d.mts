// Types for ES module importers (index.mjs): the same declarations as index.d.ts,
// which stays their single source.
import * as gateway from './index.js';

export * from './index.js';
export default gateway;
