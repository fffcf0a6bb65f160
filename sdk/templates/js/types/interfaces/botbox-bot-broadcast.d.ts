/// <reference path="./botbox-bot-types.d.ts" />
declare module 'botbox:bot/broadcast@0.1.0' {
  /**
   * Queue one message for delivery on a channel.
   */
  export function sendBroadcast(msg: Message): Receipt;
  /**
   * The channels this plugin may send to, with each one's rules.
   */
  export function channels(): Array<ChannelInfo>;
  export type Message = import('botbox:bot/types@0.1.0').Message;
  export type Receipt = import('botbox:bot/types@0.1.0').Receipt;
  export type BroadcastError = import('botbox:bot/types@0.1.0').BroadcastError;
  export type ChannelInfo = import('botbox:bot/types@0.1.0').ChannelInfo;
}
