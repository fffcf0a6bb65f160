declare module 'botbox:bot/settings@0.1.0' {
  /**
   * One setting. Strings come as they are; numbers, booleans, arrays and
   * tables come as JSON text.
   */
  export function get(key: string): string | undefined;
  /**
   * Every setting, sorted by key.
   * `list` is a WIT keyword; `%` escapes it and the function is still named `list`.
   */
  export function list(): Array<[string, string]>;
}
