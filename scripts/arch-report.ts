// Architecture report: folder-to-folder import edges in src/ and the longest functions.
// `node scripts/arch-report.ts [dir]` prints both as Markdown tables (docs/architecture.md quotes
// them; test/layers.test.ts checks the edges against the layer order with the same reader).
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, dirname, resolve } from 'node:path';
import ts from 'typescript';

/** Every .ts file under `dir`, tests excluded. */
export function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sourceFiles(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

export interface ImportEdge {
  /** Importing file, relative to the repository root. */
  readonly from: string;
  /** Imported file, relative to the repository root. */
  readonly to: string;
  /** `import type` / `export type` only. */
  readonly typeOnly: boolean;
}

/** Relative imports (static and dynamic `import('…')`) of every source file under root/src. */
export function importEdges(root: string): ImportEdge[] {
  const edges: ImportEdge[] = [];
  for (const file of sourceFiles(join(root, 'src'))) {
    const text = readFileSync(file, 'utf8');
    const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
    const add = (spec: string, typeOnly: boolean) => {
      if (!spec.startsWith('.')) return;
      edges.push({ from: relative(root, file), to: relative(root, resolve(dirname(file), spec)), typeOnly });
    };
    const visit = (node: ts.Node) => {
      if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier))
        add(node.moduleSpecifier.text, node.importClause?.isTypeOnly === true);
      else if (ts.isExportDeclaration(node) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier))
        add(node.moduleSpecifier.text, node.isTypeOnly);
      else if (
        ts.isCallExpression(node) &&
        node.expression.kind === ts.SyntaxKind.ImportKeyword &&
        node.arguments[0] &&
        ts.isStringLiteral(node.arguments[0])
      )
        add(node.arguments[0].text, false);
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  return edges;
}

/** The folder a file belongs to for the layer table: `src/phases/ban/x.ts` → `phases/ban`, `src/cli.ts` → `.`. */
export function folderOf(path: string): string {
  const d = dirname(path);
  if (!d.startsWith('src')) return d;
  return d === 'src' ? '.' : d.slice(4);
}

export interface FunctionSize {
  readonly file: string;
  readonly name: string;
  readonly lines: number;
}

/** Functions, methods and arrow functions with their line counts, longest first. */
export function longestFunctions(root: string, n: number): FunctionSize[] {
  const out: FunctionSize[] = [];
  for (const file of sourceFiles(join(root, 'src'))) {
    const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
    const visit = (node: ts.Node) => {
      if (
        ts.isFunctionDeclaration(node) ||
        ts.isMethodDeclaration(node) ||
        ts.isArrowFunction(node) ||
        ts.isFunctionExpression(node)
      ) {
        const start = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line;
        const end = sf.getLineAndCharacterOfPosition(node.getEnd()).line;
        let name = '(anonymous)';
        if ((ts.isFunctionDeclaration(node) || ts.isMethodDeclaration(node)) && node.name) name = node.name.getText(sf);
        else if (ts.isVariableDeclaration(node.parent) || ts.isPropertyAssignment(node.parent))
          name = node.parent.name.getText(sf);
        out.push({ file: relative(root, file), name, lines: end - start + 1 });
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  return out.sort((a, b) => b.lines - a.lines).slice(0, n);
}

function main(): void {
  const root = resolve(process.argv[2] ?? '.');
  const counts = new Map<string, number>();
  for (const e of importEdges(root)) {
    const a = folderOf(e.from);
    const b = folderOf(e.to);
    if (a === b) continue;
    const k = `${a} → ${b}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  console.log('| from → to | imports |\n|---|---|');
  for (const [k, v] of [...counts].sort()) console.log(`| ${k} | ${v} |`);
  console.log('\n| function | file | lines |\n|---|---|---|');
  for (const f of longestFunctions(root, 12)) console.log(`| ${f.name} | ${f.file} | ${f.lines} |`);
}

if (import.meta.main) main();
