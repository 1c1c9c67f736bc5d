/**
 * Reading Bicep without the Bicep CLI (a .NET binary that cannot be fetched here): the
 * tree-sitter grammar `tree-sitter-bicep` (WebAssembly, from npm) run by `web-tree-sitter`
 * parses the files, and a small evaluator computes the values of the variables the tests
 * care about (environment variables of each container app) from sample inputs.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Language, type Node, Parser, type Tree } from 'web-tree-sitter';

const require = createRequire(import.meta.url);
let parser: Parser | undefined;

async function bicepParser(): Promise<Parser> {
  if (parser) return parser;
  await Parser.init();
  const language = await Language.load(require.resolve('tree-sitter-bicep/tree-sitter-bicep.wasm'));
  parser = new Parser();
  parser.setLanguage(language);
  return parser;
}

export interface Declaration {
  name: string;
  node: Node;
  decorators: string;
}
export interface Param extends Declaration {
  type: string;
  hasDefault: boolean;
}
export interface ModuleRef extends Declaration {
  source: string;
}

export interface BicepFile {
  path: string;
  text: string;
  tree: Tree;
  /** `ERROR` and missing nodes, with their line numbers. */
  syntaxErrors: string[];
  params: Param[];
  vars: Map<string, Node>;
  outputs: Declaration[];
  modules: ModuleRef[];
  resources: (Declaration & { type: string })[];
}

function stringValue(node: Node): string {
  return node.children
    .filter((child): child is Node => child?.type === 'string_content' || child?.type === 'escape_sequence')
    .map((child) => (child.type === 'escape_sequence' ? child.text.slice(1) : child.text))
    .join('');
}

export async function parseBicep(path: string): Promise<BicepFile> {
  const text = readFileSync(path, 'utf8');
  const tree = (await bicepParser()).parse(text);
  if (!tree) throw new Error(`tree-sitter returned no tree for ${path}`);
  const syntaxErrors: string[] = [];
  const walk = (node: Node) => {
    if (node.type === 'ERROR' || node.isMissing) {
      syntaxErrors.push(
        `${path}:${node.startPosition.row + 1}:${node.startPosition.column + 1} ${node.isMissing ? `missing ${node.type}` : `unexpected "${node.text.slice(0, 60)}"`}`,
      );
    }
    for (const child of node.children) if (child) walk(child);
  };
  walk(tree.rootNode);

  const file: BicepFile = {
    path,
    text,
    tree,
    syntaxErrors,
    params: [],
    vars: new Map(),
    outputs: [],
    modules: [],
    resources: [],
  };
  let decorators = '';
  for (const node of tree.rootNode.namedChildren) {
    if (!node) continue;
    if (node.type === 'decorators') {
      decorators = node.text;
      continue;
    }
    const named = node.namedChildren.filter((child): child is Node => child !== null);
    const name = named.find((child) => child.type === 'identifier')?.text ?? '';
    switch (node.type) {
      case 'parameter_declaration': {
        const type = named.find((child) => child.type === 'type')?.text ?? '';
        file.params.push({ name, node, decorators, type, hasDefault: named.length > 2 });
        break;
      }
      case 'variable_declaration':
        file.vars.set(name, named[named.length - 1] as Node);
        break;
      case 'output_declaration':
        file.outputs.push({ name, node, decorators });
        break;
      case 'module_declaration': {
        const source = named.find((child) => child.type === 'string');
        file.modules.push({ name, node, decorators, source: source ? stringValue(source) : '' });
        break;
      }
      case 'resource_declaration': {
        const type = named.find((child) => child.type === 'string');
        file.resources.push({ name, node, decorators, type: type ? stringValue(type) : '' });
        break;
      }
    }
    decorators = '';
  }
  return file;
}

/** The `params: { ... }` object of a module declaration. */
export function moduleParams(module: ModuleRef): Node | undefined {
  // `module m '...' = { ... }` or, conditional, `= if (x) { ... }`.
  const direct = module.node.namedChildren.find((child) => child?.type === 'object');
  const conditional = module.node.namedChildren
    .find((child) => child?.type === 'if_statement')
    ?.namedChildren.find((child) => child?.type === 'object');
  return objectProperty(direct ?? conditional, 'params');
}

/** The value of property `key` of an object literal. */
export function objectProperty(object: Node | null | undefined, key: string): Node | undefined {
  for (const property of object?.namedChildren ?? []) {
    if (property?.type !== 'object_property') continue;
    const [name, value] = property.namedChildren;
    if (name && value && propertyName(name) === key) return value;
  }
  return undefined;
}

function propertyName(node: Node): string {
  return node.type === 'string' ? stringValue(node) : node.text;
}

/**
 * Evaluates a Bicep expression to a JSON value: literals, interpolated strings, objects,
 * arrays, identifiers (from `scope`, else the file's variables), member paths given in
 * `scope` (e.g. `environment.outputs.defaultDomain`), `a[b]`, `==`, `!=`, `&&`, `||`, `!`,
 * ternaries, and the functions union, string, empty, toLower, concat, loadJsonContent.
 * Anything else becomes the text `<expression>`, so a test sees what it could not evaluate.
 */
export function evaluate(file: BicepFile, node: Node, scope: Record<string, unknown>): unknown {
  const recurse = (child: Node | null | undefined) => (child ? evaluate(file, child, scope) : undefined);
  const named = node.namedChildren.filter((child): child is Node => child !== null);
  switch (node.type) {
    case 'string':
      return node.children
        .map((child) => {
          if (!child) return '';
          if (child.type === 'string_content') return child.text;
          if (child.type === 'escape_sequence') return child.text.slice(1);
          if (child.type === 'interpolation') return String(recurse(child.namedChildren[0]));
          return '';
        })
        .join('');
    case 'number':
      return Number(node.text);
    case 'boolean':
      return node.text === 'true';
    case 'null':
      return null;
    case 'parenthesized_expression':
      return recurse(named[0]);
    case 'object':
      return Object.fromEntries(
        named
          .filter((child) => child.type === 'object_property')
          .map((property) => {
            const [key, value] = property.namedChildren;
            return [propertyName(key as Node), recurse(value)];
          }),
      );
    case 'array':
      return named.filter((child) => child.type !== 'comment').map((child) => recurse(child));
    case 'identifier': {
      if (node.text in scope) return scope[node.text];
      const variable = file.vars.get(node.text);
      if (variable) return evaluate(file, variable, scope);
      return `<${node.text}>`;
    }
    case 'member_expression': {
      if (node.text in scope) return scope[node.text];
      const object = recurse(node.childForFieldName('object'));
      const property = node.childForFieldName('property')?.text ?? '';
      if (object && typeof object === 'object' && property in object)
        return (object as Record<string, unknown>)[property];
      return `<${node.text}>`;
    }
    case 'subscript_expression': {
      const object = recurse(node.childForFieldName('object')) as Record<string, unknown> | undefined;
      const index = recurse(node.childForFieldName('index'));
      return object && typeof object === 'object' ? object[String(index)] : `<${node.text}>`;
    }
    case 'ternary_expression':
      return recurse(node.childForFieldName('condition'))
        ? recurse(node.childForFieldName('consequence'))
        : recurse(node.childForFieldName('alternative'));
    case 'binary_expression': {
      const left = recurse(node.childForFieldName('left'));
      const right = recurse(node.childForFieldName('right'));
      const operator = node.children.find((child) => child && !child.isNamed)?.text;
      if (operator === '==') return left === right;
      if (operator === '!=') return left !== right;
      if (operator === '&&') return Boolean(left) && Boolean(right);
      if (operator === '||') return Boolean(left) || Boolean(right);
      return `<${node.text}>`;
    }
    case 'unary_expression':
      return node.text.startsWith('!') ? !recurse(named[0]) : `<${node.text}>`;
    case 'call_expression': {
      const name = node.childForFieldName('function')?.text;
      const args = (node.childForFieldName('arguments')?.namedChildren ?? []).map((child) => recurse(child));
      switch (name) {
        case 'union':
          return args.every(Array.isArray)
            ? [...new Set(args.flat())]
            : Object.assign({}, ...(args as Record<string, unknown>[]));
        case 'string':
          return typeof args[0] === 'string' ? args[0] : JSON.stringify(args[0]);
        case 'empty':
          return (
            args[0] === '' ||
            args[0] === null ||
            (Array.isArray(args[0]) && args[0].length === 0) ||
            (typeof args[0] === 'object' && args[0] !== null && Object.keys(args[0]).length === 0)
          );
        case 'toLower':
          return String(args[0]).toLowerCase();
        case 'base64ToString':
          return Buffer.from(String(args[0]), 'base64').toString('utf8');
        case 'concat':
          return args.every(Array.isArray) ? args.flat() : args.join('');
        case 'loadJsonContent':
          return JSON.parse(readFileSync(join(dirname(file.path), String(args[0])), 'utf8'));
        default:
          return `<${node.text}>`;
      }
    }
    default:
      return `<${node.text}>`;
  }
}
