// Markdown helpers: tables, and replacing one "## Heading" section of a results file while keeping
// every other section as it is.
import { readFileSync, writeFileSync, renameSync, existsSync } from 'node:fs';

export type Align = 'l' | 'r';

/** A markdown table; `align` per column ('r' for numbers). */
export function markdownTable(header: string[], rows: string[][], align: Align[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const pad = (s: string, i: number) => (align[i] === 'r' ? s.padStart(widths[i]!) : s.padEnd(widths[i]!));
  const line = (cells: string[]) => `| ${cells.map((c, i) => pad(c ?? '', i)).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (align[i] === 'r' ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|')}|`;
  return [line(header), sep, ...rows.map(line)].join('\n');
}

/**
 * Replace the section that starts with the line `heading` (e.g. "## Pass-through proxy") and runs to
 * the next line starting with "## " (or the end) by `heading` + `body`; append it when absent; create
 * the file with `title` when missing. Read and written back at once (atomic rename) to keep the
 * window for clobbering a concurrent writer's section small.
 */
export function upsertSection(file: string, heading: string, body: string, title = '# Benchmark results'): void {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : `${title}\n`;
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.trimEnd() === heading);
  const section = [heading, '', ...body.trimEnd().split('\n'), ''];
  let out: string[];
  if (start === -1) {
    const base = [...lines];
    while (base.length && base[base.length - 1]!.trim() === '') base.pop();
    out = [...base, '', ...section];
  } else {
    let end = lines.findIndex((l, i) => i > start && /^## /.test(l));
    if (end === -1) end = lines.length;
    out = [...lines.slice(0, start), ...section, ...lines.slice(end)];
  }
  let result = out.join('\n');
  if (!result.endsWith('\n')) result += '\n';
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, result);
  renameSync(tmp, file);
}
