import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { TemplateError } from '../errors';

/** A value an option may take: manifests list them as JSON scalars. */
export type OptionValue = string | number | boolean;

const optionValue = z.union([z.string(), z.number(), z.boolean()]);

const optionSchema = z
  .object({
    label: z.string().min(1),
    values: z.array(optionValue).min(1),
    default: optionValue,
    /** Text of each value in the subtitle, keyed by the value as a string. */
    subtitle: z.record(z.string(), z.string()).optional(),
    /** Text of each value in choice lists, keyed like `subtitle`. */
    labels: z.record(z.string(), z.string()).optional(),
  })
  .strict();

const manifestSchema = z
  .object({
    title: z.string().min(1),
    description: z.string().default(''),
    template: z.string().default('template.njk'),
    stylesheet: z.string().default('style.css'),
    options: z
      .record(z.string().regex(/^[a-z][a-z0-9_]*$/), optionSchema)
      .default({}),
    subtitle: z.array(z.string()).default([]),
    copies_differ: z
      .union([z.boolean(), z.record(z.string(), z.array(optionValue))])
      .default(false),
  })
  .strict();

/** One option of a resource, as declared in its manifest. */
export type OptionSpec = z.infer<typeof optionSchema>;

/** A checked resource manifest, with the implicit `paper_size` option. */
export interface Manifest {
  /** The folder name, which tasks give as `resource_view`. */
  view: string;
  /** Absolute path of the resource folder. */
  dir: string;
  title: string;
  description: string;
  /** Template file, relative to the resources root (`<view>/template.njk`). */
  templateName: string;
  /** Absolute path of the stylesheet; empty text when the file is absent. */
  stylesheetPath: string;
  /** Options in declaration order, `paper_size` last. */
  options: Record<string, OptionSpec>;
  /** Option names whose value texts make the subtitle, `paper_size` last. */
  subtitle: string[];
  /** Whether copies differ: always, never, or for listed option values. */
  copiesDiffer: boolean | Record<string, OptionValue[]>;
}

/** The option every resource has. */
export const PAPER_SIZE: OptionSpec = {
  label: 'Paper size',
  values: ['a4', 'letter'],
  default: 'a4',
  subtitle: { a4: 'a4', letter: 'letter' },
  labels: { a4: 'A4', letter: 'US Letter' },
};

/** The manifest file name inside a resource folder. */
export const MANIFEST_FILE = 'manifest.json';

/**
 * Reads and checks the manifest of one resource folder. Throws a
 * {@link TemplateError} naming the file and the problem.
 */
export function loadManifest(root: string, view: string): Manifest {
  const dir = path.join(root, view);
  const file = path.join(dir, MANIFEST_FILE);
  const raw = readJson(file);
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map(
      (issue) => `${issue.path.join('.') || '(top)'}: ${issue.message}`,
    );
    throw new TemplateError(`${file}: ${issues.join('; ')}`);
  }
  const m = parsed.data;
  const options = { ...m.options, paper_size: PAPER_SIZE };
  checkOptions(file, options, m.subtitle);
  const templatePath = path.join(dir, m.template);
  if (!fs.existsSync(templatePath)) {
    throw new TemplateError(`${file}: template ${m.template} does not exist`);
  }
  return {
    view,
    dir,
    title: m.title,
    description: m.description,
    templateName: `${view}/${m.template}`,
    stylesheetPath: path.join(dir, m.stylesheet),
    options,
    subtitle: [
      ...m.subtitle.filter((name) => name !== 'paper_size'),
      'paper_size',
    ],
    copiesDiffer: m.copies_differ,
  };
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new TemplateError(`${file}: cannot be read`, { cause: error });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new TemplateError(
      `${file}: not valid JSON (${(error as Error).message})`,
    );
  }
}

function checkOptions(
  file: string,
  options: Record<string, OptionSpec>,
  subtitle: string[],
): void {
  for (const [name, spec] of Object.entries(options)) {
    if (!spec.values.some((value) => value === spec.default)) {
      throw new TemplateError(
        `${file}: option ${name}: default ${JSON.stringify(spec.default)} is not among its values`,
      );
    }
  }
  for (const name of subtitle) {
    const spec = options[name];
    if (!spec)
      throw new TemplateError(`${file}: subtitle names unknown option ${name}`);
    for (const value of spec.values) {
      if (spec.subtitle?.[String(value)] === undefined) {
        throw new TemplateError(
          `${file}: option ${name}: no subtitle text for value ${JSON.stringify(value)}`,
        );
      }
    }
  }
}
