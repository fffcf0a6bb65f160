/// <reference path="./botbox-bot-types.d.ts" />
declare module 'botbox:bot/handler@0.1.0' {
  /**
   * What the plugin asks for. Called once when it loads.
   */
  export function describe(): Manifest;
  /**
   * Handle one event. An `err` fails this event only, and its text is
   * logged and shown to the operator.
   */
  export function handle(event: Event): void;
  export type Event = import('botbox:bot/types@0.1.0').Event;
  export type Manifest = import('botbox:bot/types@0.1.0').Manifest;
}
