// A line diff for the conflict dialog: longest common subsequence after trimming the common
// head and tail (edits to a shared prompt are usually small and local), then unified hunks.
// Plain code rather than a vendored library: the dialog needs nothing more.

const MAX_CELLS = 4_000_000; // past this the middle is shown as replaced, not searched

function lines(text) {
  if (text === "") return [];
  const out = text.split("\n");
  if (out[out.length - 1] === "") out.pop();
  return out;
}

// [{op: " " | "-" | "+", text}] turning `a` into `b`.
export function diffLines(aText, bText) {
  const a = lines(aText);
  const b = lines(bText);
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head &&
         a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail++;
  const am = a.slice(head, a.length - tail);
  const bm = b.slice(head, b.length - tail);
  const ops = a.slice(0, head).map((text) => ({ op: " ", text }));
  const n = am.length;
  const m = bm.length;
  if (n * m > MAX_CELLS) {
    am.forEach((text) => ops.push({ op: "-", text }));
    bm.forEach((text) => ops.push({ op: "+", text }));
  } else {
    // lcs[i * (m + 1) + j]: LCS length of am[i..] and bm[j..]
    const w = m + 1;
    const lcs = new Uint32Array((n + 1) * w);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i * w + j] = am[i] === bm[j] ? lcs[(i + 1) * w + j + 1] + 1
          : Math.max(lcs[(i + 1) * w + j], lcs[i * w + j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && am[i] === bm[j]) {
        ops.push({ op: " ", text: am[i] }); i++; j++;
      } else if (i < n && (j === m || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1])) {
        ops.push({ op: "-", text: am[i] }); i++; // removals first on a tie, as diff -u shows
      } else {
        ops.push({ op: "+", text: bm[j] }); j++;
      }
    }
  }
  a.slice(a.length - tail).forEach((text) => ops.push({ op: " ", text }));
  return ops;
}

// Unified hunks: [{header: "@@ -1,3 +1,4 @@", ops: [...]}], `context` unchanged lines around
// each change; [] when the texts are the same.
export function hunks(ops, context = 3) {
  const out = [];
  let aLine = 1;
  let bLine = 1;
  const at = ops.map((o) => {
    const here = { a: aLine, b: bLine };
    if (o.op !== "+") aLine++;
    if (o.op !== "-") bLine++;
    return here;
  });
  let k = 0;
  while (k < ops.length) {
    if (ops[k].op === " ") { k++; continue; }
    let start = Math.max(0, k - context);
    let end = k;
    for (;;) {
      while (end < ops.length && ops[end].op !== " ") end++;
      let next = end;
      while (next < ops.length && ops[next].op === " ") next++;
      if (next < ops.length && next - end <= 2 * context) { end = next; continue; }
      end = Math.min(ops.length, end + context);
      break;
    }
    const part = ops.slice(start, end);
    const aCount = part.filter((o) => o.op !== "+").length;
    const bCount = part.filter((o) => o.op !== "-").length;
    const aStart = aCount ? at[start].a : at[start].a - 1;
    const bStart = bCount ? at[start].b : at[start].b - 1;
    out.push({ header: `@@ -${aStart},${aCount} +${bStart},${bCount} @@`, ops: part });
    k = end;
  }
  return out;
}
