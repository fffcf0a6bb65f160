/// <reference path="./interfaces/botbox-bot-broadcast.d.ts" />
/// <reference path="./interfaces/botbox-bot-handler.d.ts" />
/// <reference path="./interfaces/botbox-bot-kv.d.ts" />
/// <reference path="./interfaces/botbox-bot-log.d.ts" />
/// <reference path="./interfaces/botbox-bot-settings.d.ts" />
/// <reference path="./interfaces/botbox-bot-types.d.ts" />
declare module 'botbox:bot/bot@0.1.0' {
  export type * as BotboxBotBroadcast010 from 'botbox:bot/broadcast@0.1.0'; // import botbox:bot/broadcast@0.1.0
  export type * as BotboxBotKv010 from 'botbox:bot/kv@0.1.0'; // import botbox:bot/kv@0.1.0
  export type * as BotboxBotLog010 from 'botbox:bot/log@0.1.0'; // import botbox:bot/log@0.1.0
  export type * as BotboxBotSettings010 from 'botbox:bot/settings@0.1.0'; // import botbox:bot/settings@0.1.0
  export type * as BotboxBotTypes010 from 'botbox:bot/types@0.1.0'; // import botbox:bot/types@0.1.0
  export * as handler from 'botbox:bot/handler@0.1.0'; // export botbox:bot/handler@0.1.0
}
