// {{name}}: a botbox plugin. It greets people who say `!hello` in chat,
// answering in their conversation, and counts greetings in kv.
//
// Try it: `./build.sh`, then
// `botbox call {{name}}.wasm --event '{"name": "hello", "payload": "Ada"}'`.
//
// The imports are typed by types/, which `./build.sh` regenerates from
// wit/ (`jco guest-types`), so a wrongly typed call fails the build and the
// editor marks it. Records are objects with camelCase fields, variants are
// `{tag, val}`, enums and kinds are strings, options are a value or
// `undefined`, `list<u8>` is a Uint8Array and u64 is a bigint. An import
// that returns `result` throws an Error whose `payload` is the error;
// `handle` fails the event by throwing a string.

import { sendBroadcast } from 'botbox:bot/broadcast@0.1.0';
import { get as getSetting } from 'botbox:bot/settings@0.1.0';
import * as kv from 'botbox:bot/kv@0.1.0';
import type * as Handler from 'botbox:bot/handler@0.1.0';
import type { Event, Manifest } from 'botbox:bot/types@0.1.0';

function greeting(name: string, count: number): string {
  const template = getSetting('greeting') ?? 'Hello, {name}!';
  return `${template.replaceAll('{name}', name)} (greeting #${count})`;
}

// Counts one more greeting in kv and returns the new total.
function countGreeting(): number {
  const stored = kv.get('greeted');
  const count = (stored === undefined ? 0 : Number(new TextDecoder().decode(stored))) + 1;
  kv.set('greeted', new TextEncoder().encode(String(count)));
  return count;
}

function greet(name: string, channel: string, replyTo: string | undefined): void {
  sendBroadcast({
    channel,
    content: { tag: 'text', val: greeting(name, countGreeting()) },
    sender: getSetting('sender'),
    replyTo,
  });
}

function handleEvent(event: Event): void {
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

// A host call's Error carries the WIT error as `payload`.
function describeError(err: unknown): string {
  const payload = (err as { payload?: { tag: string; val?: unknown } } | null)?.payload;
  return payload ? `${payload.tag}: ${String(payload.val ?? '')}` : String(err);
}

// The export the `bot` world asks for; `typeof Handler` makes tsc check it
// against the WIT.
export const handler: typeof Handler = {
  describe(): Manifest {
    return {
      name: '{{name}}',
      version: '0.1.0',
      channels: ['lobby'],
      events: ['chat-message', 'custom'],
      schedules: [],
    };
  },

  handle(event: Event): void {
    try {
      handleEvent(event);
    } catch (err) {
      if (typeof err === 'string') {
        throw err;
      }
      // A failed host call, or a bug. Only a string becomes the event's
      // error; an Error traps.
      throw describeError(err);
    }
  },
};
