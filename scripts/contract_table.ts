/**
 * The README's table of event fields, made from `contract/events.json`:
 * `deno run scripts/contract_table.ts` prints it; paste it between the README's
 * `contract-table` markers (`deno fmt` aligns it). `tests/contract_test.ts` fails while the
 * two differ.
 *
 * @module
 */
import contract from "../contract/events.json" with { type: "json" };

/** A cell's text, with what would break a Markdown table escaped. */
function cell(text: string): string {
  return text.replaceAll("|", "\\|");
}

/** What a field of `kind` gets when it is missing. */
function defaultOf(kind: keyof typeof contract.types): string {
  const type: { default?: unknown; required?: boolean } = contract.types[kind];
  return type.required ? "required" : `\`${JSON.stringify(type.default)}\``;
}

/** The table's rows, header first, as cells. */
export function contractRows(): string[][] {
  const rows = [["type", "field", "kind", "default", "meaning"]];
  for (const [type, { fields }] of Object.entries(contract.events)) {
    let first = true;
    for (const [name, field] of Object.entries(fields)) {
      const kind = field.type as keyof typeof contract.types;
      rows.push([
        first ? `\`${type}\`` : "",
        `\`${name}\``,
        kind,
        defaultOf(kind),
        cell(field.meaning),
      ]);
      first = false;
    }
  }
  return rows;
}

/** The rows as a Markdown table. */
export function contractTable(): string {
  const [header, ...body] = contractRows();
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...body.map(line)].join("\n");
}

if (import.meta.main) console.log(contractTable());
