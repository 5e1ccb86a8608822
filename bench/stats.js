'use strict';
// How the benchmarks summarise repeated runs: medians, and numbers as the tables
// print them.

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function fmt(x) {
  if (x === undefined || Number.isNaN(x)) return '–';
  if (Math.abs(x) >= 100) return Math.round(x).toLocaleString('en-US');
  return x.toFixed(Math.abs(x) >= 10 ? 1 : 2);
}

/** The median of the numbers among `values` and its table text, median [min–max]. */
function summary(values, failed) {
  const xs = values.filter((v) => typeof v === 'number');
  if (!xs.length) return { text: failed ? 'did not finish' : '–' };
  const m = median(xs);
  return { median: m, text: xs.length > 1 ? `${fmt(m)} [${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}]` : fmt(m) };
}

module.exports = { median, fmt, summary };
