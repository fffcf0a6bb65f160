declare module 'botbox:bot/log@0.1.0' {
  /**
   * Write one line.
   */
  export function log(level: Level, message: string): void;
  /**
   * How serious a line is.
   * # Variants
   * 
   * ## `"trace"`
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
}
