import { InvalidTaskError } from '../errors';
import type { Catalogue } from './catalogue';
import type { Manifest, OptionValue } from './manifest';

/** The kind of a render task message. */
export const TASK_KIND = 'task#render';

/** A checked render task, ready for the renderer. */
export interface RenderJob {
  /** The queue's id of the task (or a caller's own id); seeds randomness. */
  taskId: string;
  manifest: Manifest;
  resourceSlug: string;
  resourceName: string;
  url: string;
  headerText: string;
  copies: number;
  /** Every declared option, `paper_size` included, as its declared value. */
  options: Record<string, OptionValue>;
  /** `<resource_name> (<subtitle>).pdf`. */
  filename: string;
  /** Whether each copy is filled with its own random numbers. */
  copiesDiffer: boolean;
  /**
   * `auto`: inline when the result fits the message limit, else a link;
   * `link`: always stored and linked.
   */
  delivery: Delivery;
}

/** How a task wants its document: see {@link RenderJob.delivery}. */
export type Delivery = 'auto' | 'link';

const DELIVERIES: readonly Delivery[] = ['auto', 'link'];

const REQUIRED_TEXT = [
  'resource_slug',
  'resource_name',
  'resource_view',
  'url',
] as const;

/**
 * Longest text fields, in UTF-8 bytes. The name and the subtitle make the
 * file name, which most file systems cap at 255 bytes; the header must fit
 * its line in the top margin.
 */
export const MAX_TEXT_BYTES: Record<string, number> = {
  resource_slug: 150,
  resource_name: 150,
  resource_view: 150,
  url: 1000,
  header_text: 300,
};

/**
 * Deepest nesting of arrays and objects a task payload may have. A task
 * needs two levels; the limit keeps every later step (checks, error
 * messages, logs) from recursing as deep as a hostile payload asks.
 */
export const MAX_JSON_DEPTH = 64;

/** Limits a task is checked against. */
export interface TaskLimits {
  maxCopies: number;
  maxTaskBytes: number;
}

/**
 * Parses and checks a raw task payload against the contract and the
 * resource's manifest. Throws an {@link InvalidTaskError} naming the field,
 * the value and what was expected.
 */
export function parseTask(
  payload: Buffer,
  taskId: string,
  catalogue: Catalogue,
  limits: TaskLimits,
): RenderJob {
  return checkTask(
    decodePayload(payload, limits.maxTaskBytes),
    taskId,
    catalogue,
    limits,
  );
}

/** The JSON object of a payload, or a clear error saying why not. */
export function decodePayload(
  payload: Buffer,
  maxTaskBytes: number,
): Record<string, unknown> {
  if (payload.length > maxTaskBytes) {
    throw new InvalidTaskError(
      `task payload is ${payload.length} bytes, larger than the limit of ${maxTaskBytes} bytes`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(payload);
  } catch {
    throw new InvalidTaskError('task payload is not valid UTF-8 text');
  }
  const depth = jsonDepth(text, MAX_JSON_DEPTH);
  if (depth > MAX_JSON_DEPTH) {
    throw new InvalidTaskError(
      `task payload is nested more than ${MAX_JSON_DEPTH} levels deep ` +
        `(arrays and objects), deeper than the limit of ${MAX_JSON_DEPTH}`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new InvalidTaskError(
      `task payload is not valid JSON: ${(error as Error).message}`,
    );
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const got = Array.isArray(value)
      ? 'an array'
      : value === null
        ? 'null'
        : typeof value;
    throw new InvalidTaskError(
      `task payload must be a JSON object, got ${got}`,
    );
  }
  return value as Record<string, unknown>;
}

/**
 * The nesting depth of arrays and objects in JSON text, read in one pass
 * without parsing or recursion. Counting stops once it passes `limit`, so
 * the answer is at most `limit + 1`. Text that is not JSON gets a number
 * too; JSON.parse judges it afterwards.
 */
export function jsonDepth(text: string, limit: number): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (inString) {
      if (code === 0x5c)
        i++; // a backslash escapes the next character
      else if (code === 0x22) inString = false;
    } else if (code === 0x22) {
      inString = true;
    } else if (code === 0x5b || code === 0x7b) {
      depth++;
      if (depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if (code === 0x5d || code === 0x7d) {
      depth--;
    }
  }
  return deepest;
}

/**
 * The resource view a task names, when it is one the catalogue knows,
 * whether or not the rest of the task is valid: failure reports and metrics
 * can then say which resource failed.
 */
export function knownViewOf(
  task: Record<string, unknown>,
  catalogue: Catalogue,
): string | undefined {
  const view = task['resource_view'];
  return typeof view === 'string' ? catalogue.get(view)?.view : undefined;
}

/** Checks a decoded task object; see {@link parseTask}. */
export function checkTask(
  task: Record<string, unknown>,
  taskId: string,
  catalogue: Catalogue,
  limits: TaskLimits,
): RenderJob {
  if (task['kind'] !== TASK_KIND) {
    throw new InvalidTaskError(
      task['kind'] === undefined
        ? `field kind is missing, expected "${TASK_KIND}"`
        : `field kind: got ${show(task['kind'])}, expected "${TASK_KIND}"`,
    );
  }
  for (const field of REQUIRED_TEXT) requireString(task, field, false);
  requireString(task, 'header_text', true);
  const view = task['resource_view'] as string;
  const manifest = catalogue.get(view);
  if (!manifest) {
    throw new InvalidTaskError(
      `resource_view: got ${show(view)}, expected one of ${catalogue
        .list()
        .map((m) => m.view)
        .join(', ')}`,
    );
  }
  const copies = checkCopies(task['copies'], limits.maxCopies);
  const options = checkOptions(task, manifest);
  const delivery = checkDelivery(task['delivery']);
  const resourceName = task['resource_name'] as string;
  return {
    taskId,
    manifest,
    resourceSlug: task['resource_slug'] as string,
    resourceName,
    url: task['url'] as string,
    headerText: task['header_text'] as string,
    copies,
    options,
    filename: fileNameOf(resourceName, subtitleOf(manifest, options)),
    copiesDiffer: copiesDiffer(manifest, options),
    delivery,
  };
}

/**
 * `<resource_name> (<subtitle>).pdf`, with what a file system or a
 * consumer's path join would take as a separator or control (`/ \ : * ? "
 * < > |`, control characters) replaced by `_`, and no leading dot: the one
 * name that the result, the stored file and `results --save` all use.
 */
export function fileNameOf(resourceName: string, subtitle: string): string {
  const name = `${resourceName} (${subtitle}).pdf`
    .replace(/[\u0000-\u001f\u007f/\\:*?"<>|]/g, '_')
    .replace(/^\.+/, '_');
  return name;
}

function checkDelivery(value: unknown): Delivery {
  if (value === undefined) return 'auto';
  const match = DELIVERIES.find((d) => d === value);
  if (match === undefined) {
    throw new InvalidTaskError(
      `field delivery: got ${show(value)}, expected "auto" or "link"`,
    );
  }
  return match;
}

function requireString(
  task: Record<string, unknown>,
  field: string,
  mayBeEmpty: boolean,
): void {
  const value = task[field];
  if (value === undefined)
    throw new InvalidTaskError(`field ${field} is missing`);
  if (typeof value !== 'string' || (!mayBeEmpty && value.trim() === '')) {
    const expected = mayBeEmpty ? 'a string' : 'a non-empty string';
    throw new InvalidTaskError(
      `field ${field}: got ${show(value)}, expected ${expected}`,
    );
  }
  const bytes = Buffer.byteLength(value, 'utf8');
  const max = MAX_TEXT_BYTES[field] ?? Infinity;
  if (bytes > max) {
    throw new InvalidTaskError(
      `field ${field}: got ${bytes} bytes, expected at most ${max}`,
    );
  }
}

function checkCopies(value: unknown, maxCopies: number): number {
  if (value === undefined)
    throw new InvalidTaskError('field copies is missing');
  if (
    typeof value !== 'number' ||
    !Number.isInteger(value) ||
    value < 1 ||
    value > maxCopies
  ) {
    throw new InvalidTaskError(
      `field copies: got ${show(value)}, expected a whole number from 1 to ${maxCopies}`,
    );
  }
  return value;
}

/**
 * Every declared option must be present and among its allowed values. A
 * value also matches when its text form does (`"8"` for 8, `"true"` for
 * true), and is then stored as the declared value.
 */
function checkOptions(
  task: Record<string, unknown>,
  manifest: Manifest,
): Record<string, OptionValue> {
  const options: Record<string, OptionValue> = {};
  for (const [name, spec] of Object.entries(manifest.options)) {
    const value = task[name];
    const expected = listWords(spec.values.map((v) => show(v)));
    if (value === undefined) {
      throw new InvalidTaskError(
        `option ${name} is missing, expected ${expected}`,
      );
    }
    const match = spec.values.find(
      (allowed) =>
        allowed === value ||
        (['string', 'number', 'boolean'].includes(typeof value) &&
          String(allowed) === String(value)),
    );
    if (match === undefined) {
      throw new InvalidTaskError(
        `option ${name}: got ${show(value)}, expected ${expected}`,
      );
    }
    options[name] = match;
  }
  return options;
}

/** The subtitle of a file name: the options' value texts joined by " - ". */
export function subtitleOf(
  manifest: Manifest,
  options: Record<string, OptionValue>,
): string {
  return manifest.subtitle
    .map(
      (name) =>
        manifest.options[name]?.subtitle?.[String(options[name])] ??
        String(options[name]),
    )
    .join(' - ');
}

function copiesDiffer(
  manifest: Manifest,
  options: Record<string, OptionValue>,
): boolean {
  const rule = manifest.copiesDiffer;
  if (typeof rule === 'boolean') return rule;
  return Object.entries(rule).some(([name, values]) =>
    values.some((value) => String(value) === String(options[name])),
  );
}

/** Longest text of a value quoted in an error message, in characters. */
const SHOWN_CHARS = 60;

/**
 * A value as JSON for an error message, clipped to {@link SHOWN_CHARS}.
 * Written with an explicit stack and stopped once long enough, so neither a
 * deep nor a huge value costs more than a few dozen steps.
 */
function show(value: unknown): string {
  let text = '';
  const todo: ({ text: string } | { value: unknown })[] = [{ value }];
  while (todo.length > 0 && text.length <= SHOWN_CHARS) {
    const next = todo.pop() as { text: string } | { value: unknown };
    if ('text' in next) {
      text += next.text;
      continue;
    }
    const item = next.value;
    if (Array.isArray(item)) {
      text += '[';
      todo.push({ text: ']' });
      const items = item.slice(0, SHOWN_CHARS) as unknown[];
      for (let i = items.length - 1; i >= 0; i--) {
        todo.push({ value: items[i] });
        if (i > 0) todo.push({ text: ',' });
      }
    } else if (typeof item === 'object' && item !== null) {
      text += '{';
      todo.push({ text: '}' });
      const entries = Object.entries(item).slice(0, SHOWN_CHARS);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [key, inner] = entries[i] as [string, unknown];
        todo.push({ value: inner });
        todo.push({ text: `${JSON.stringify(key)}:` });
        if (i > 0) todo.push({ text: ',' });
      }
    } else {
      text += JSON.stringify(item) ?? String(item);
    }
  }
  return text.length > SHOWN_CHARS ? `${text.slice(0, 57)}...` : text;
}

function listWords(words: string[]): string {
  if (words.length <= 1) return words.join('');
  return `${words.slice(0, -1).join(', ')} or ${words[words.length - 1]}`;
}
