// Web globals the plugin's JavaScript runtime (StarlingMonkey, inside
// componentize-js) provides and this bot uses. Add what you need; the rest
// of the WIT world is declared in types/, generated from wit/.

declare class TextEncoder {
  encode(input?: string): Uint8Array;
}

declare class TextDecoder {
  constructor(label?: string);
  decode(input?: Uint8Array): string;
}
