// @ts-check
// {{name}}: a botbox plugin. It greets people who say `!hello` in chat,
// answering in their conversation, and counts greetings in kv.
//
// Try it: `./build.sh`, then
// `botbox call {{name}}.wasm --event '{"name": "hello", "payload": "Ada"}'`.
//
// `// @ts-check` (and jsconfig.json) make editors check this file against
// types/, the WIT declarations `./build.sh` regenerates from wit/ (`jco
// guest-types`); `npm run check` does the same with tsc. The WIT types map
// to JavaScript like this: records are objects with camelCase fields,
// variants are `{tag, val}`, enums and kinds are strings, options are a
// value or `undefined`, `list<u8>` is a Uint8Array and u64 is a BigInt. An import that returns `result` throws an Error whose `payload`
// is the error; `handle` fails the event by throwing a string.

import { sendBroadcast } from 'botbox:bot/broadcast@0.1.0';
import { get as getSetting } from 'botbox:bot/settings@0.1.0';
import * as kv from 'botbox:bot/kv@0.1.0';

/** @typedef {import('botbox:bot/types@0.1.0').Event} Event */

/**
 * @param {string} name
 * @param {number} count
 * @returns {string}
 */
function greeting(name, count) {
  const template = getSetting('greeting') ?? 'Hello, {name}!';
  return `${template.replaceAll('{name}', name)} (greeting #${count})`;
}

/**
 * Counts one more greeting in kv and returns the new total.
 * @returns {number}
 */
function countGreeting() {
  const stored = kv.get('greeted');
  const count = (stored === undefined ? 0 : Number(new TextDecoder().decode(stored))) + 1;
  kv.set('greeted', new TextEncoder().encode(String(count)));
  return count;
}

/**
 * @param {string} name
 * @param {string} channel
 * @param {string | undefined} replyTo
 */
function greet(name, channel, replyTo) {
  sendBroadcast({
    channel,
    content: { tag: 'text', val: greeting(name, countGreeting()) },
    sender: getSetting('sender'),
    replyTo,
  });
}

/** @param {Event} event */
function handle(event) {
  if (event.tag === 'chat-message') {
    const msg = event.val;
    if (msg.text.trim() === '!hello') {
      greet(msg.senderName || msg.senderId, msg.channel, msg.conversation);
    }
  } else if (event.tag === 'custom') {
    // `botbox call … --event '{"name": "hello", "payload": "Ada"}'`
    if (event.val.name !== 'hello') {
      throw `unknown event \`${event.val.name}\`; this bot knows \`hello\``;
    }
    greet(event.val.payload.trim() || 'everyone', 'lobby', undefined);
  }
}

// The export the `bot` world asks for, checked against the WIT.
/** @type {typeof import('botbox:bot/handler@0.1.0')} */
export const handler = {
  describe() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      channels: ['lobby'],
      events: ['chat-message', 'custom'],
      schedules: [],
    };
  },

  handle(event) {
    try {
      handle(event);
    } catch (err) {
      if (typeof err === 'string') {
        throw err;
      }
      // A host call failed (its Error carries the WIT error as `payload`),
      // or a bug. Only a string becomes the event's error; an Error traps.
      const payload = /** @type { {payload?: {tag: string, val?: unknown}} | null } */ (err)?.payload;
      throw payload ? `${payload.tag}: ${payload.val ?? ''}` : String(err);
    }
  },
};
