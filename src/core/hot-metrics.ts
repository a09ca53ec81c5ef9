// Metrics touched on every request, at the cost of a few number increments. prom-client's labelled
// children hash their label object on every call (it showed in the request-path profile); these
// cells are created once per label set (label sets come from configuration, so they stay few) and
// are read only when Prometheus scrapes. They register in the prom-client registry like any metric.

export interface CounterCell {
  value: number;
}

export interface HistogramCell {
  /** Per-bucket counts (not cumulative); the last slot is +Inf. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

interface Exported {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

export class HotCounter {
  readonly name: string;
  readonly help: string;
  readonly type = 'counter';
  readonly aggregator = 'sum';
  readonly labelNames: readonly string[];
  readonly #cells = new Map<string, { labels: Record<string, string>; cell: CounterCell }>();

  constructor(opts: { name: string; help: string; labelNames: readonly string[] }) {
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = opts.labelNames;
  }

  /** The cell for these label values, in labelNames order. Call once per label set and keep it. */
  cell(...values: string[]): CounterCell {
    const key = values.join('\u0001');
    let entry = this.#cells.get(key);
    if (entry === undefined) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((n, i) => {
        labels[n] = values[i] ?? '';
      });
      entry = { labels, cell: { value: 0 } };
      this.#cells.set(key, entry);
    }
    return entry.cell;
  }

  /** Every label set and its live cell (read-only use: the dashboard's snapshot). */
  entries(): IterableIterator<{ labels: Record<string, string>; cell: CounterCell }> {
    return this.#cells.values();
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: Exported[] } {
    const values: Exported[] = [];
    for (const { labels, cell } of this.#cells.values()) values.push({ labels, value: cell.value });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.#cells.clear();
  }
}

export class HotHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly labelNames: readonly string[];
  readonly upperBounds: readonly number[];
  readonly #cells = new Map<string, { labels: Record<string, string>; cell: HistogramCell }>();

  constructor(opts: { name: string; help: string; labelNames: readonly string[]; buckets: readonly number[] }) {
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = opts.labelNames;
    this.upperBounds = opts.buckets;
  }

  cell(...values: string[]): HistogramCell {
    const key = values.join('\u0001');
    let entry = this.#cells.get(key);
    if (entry === undefined) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((n, i) => {
        labels[n] = values[i] ?? '';
      });
      entry = { labels, cell: { counts: new Float64Array(this.upperBounds.length + 1), sum: 0, count: 0 } };
      this.#cells.set(key, entry);
    }
    return entry.cell;
  }

  /** Every label set and its live cell (read-only use: the dashboard's snapshot). */
  entries(): IterableIterator<{ labels: Record<string, string>; cell: HistogramCell }> {
    return this.#cells.values();
  }

  observe(cell: HistogramCell, value: number): void {
    const bounds = this.upperBounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    cell.counts[i]!++;
    cell.sum += value;
    cell.count++;
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: Exported[] } {
    const values: Exported[] = [];
    for (const { labels, cell } of this.#cells.values()) {
      let acc = 0;
      for (let i = 0; i < this.upperBounds.length; i++) {
        acc += cell.counts[i]!;
        values.push({ labels: { ...labels, le: this.upperBounds[i]! }, value: acc, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { ...labels, le: '+Inf' }, value: cell.count, metricName: `${this.name}_bucket` });
      values.push({ labels, value: cell.sum, metricName: `${this.name}_sum` });
      values.push({ labels, value: cell.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.#cells.clear();
  }
}
