// poll: runs one poll at a time. An operator opens it with a custom event,
// people vote in chat (`!vote 2`) or through custom events, and closing it
// announces the results. All state lives in kv, so votes survive restarts
// and every event runs in a fresh instance.
//
// Built with componentize-js against wit/bot.wit (world `bot`); see
// plugins/README.md for events, settings and kv keys.

import { sendBroadcast } from 'botbox:bot/broadcast@0.1.0';
import { log } from 'botbox:bot/log@0.1.0';
import { get as getSetting } from 'botbox:bot/settings@0.1.0';
import * as kv from 'botbox:bot/kv@0.1.0';

const VERSION = '0.1.0';
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// --- host calls, with errors turned into readable text ----------------------

// Imports that return `result<_, E>` throw an Error whose `payload` is E,
// a `{tag, val}` variant.
function describeError(err) {
  const payload = err && err.payload;
  if (payload && typeof payload === 'object' && 'tag' in payload) {
    return payload.val === undefined
      ? payload.tag
      : `${payload.tag}: ${typeof payload.val === 'bigint' ? payload.val.toString() : payload.val}`;
  }
  return String(err && err.message !== undefined ? err.message : err);
}

// Throwing a string from `handle` makes its `err`; anything else traps.
class Failure {
  constructor(message) {
    this.message = message;
  }
}

function fail(message) {
  throw new Failure(message);
}

function host(what, call) {
  try {
    return call();
  } catch (err) {
    fail(`${what}: ${describeError(err)}`);
  }
}

function kvGetText(key) {
  const bytes = host(`kv get ${key}`, () => kv.get(key));
  return bytes === undefined ? undefined : decoder.decode(bytes);
}

function kvGetJson(key) {
  const text = kvGetText(key);
  return text === undefined ? undefined : JSON.parse(text);
}

function kvSet(key, value) {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  host(`kv set ${key}`, () => kv.set(key, encoder.encode(text)));
}

function kvDelete(key) {
  host(`kv delete ${key}`, () => kv.delete(key));
}

function kvKeys(prefix) {
  return host(`kv list ${prefix}`, () => kv.listKeys(prefix, 10000));
}

function setting(key, fallback) {
  const value = getSetting(key);
  return value === undefined ? fallback : value;
}

function intSetting(key, fallback, min, max) {
  const value = Number(setting(key, String(fallback)));
  return Number.isInteger(value) && value >= min && value <= max ? value : fallback;
}

function send(channel, text, { replyTo, key } = {}) {
  const msg = {
    channel,
    content: { tag: 'text', val: text },
    sender: getSetting('sender'),
    replyTo,
    idempotencyKey: key,
  };
  return host(`send to #${channel}`, () => sendBroadcast(msg));
}

function info(text) {
  log('info', text);
}

// --- the poll ---------------------------------------------------------------

function announceChannel() {
  return setting('channel', 'announcements');
}

function currentPoll() {
  return kvGetJson('poll');
}

function optionList(poll) {
  return poll.options.map((option, i) => `${i + 1}) ${option}`).join(' ');
}

function votePrefix(poll) {
  return `vote/${poll.id}/`;
}

// Votes per option, from the `vote/<id>/<voter>` keys.
function tally(poll) {
  const counts = poll.options.map(() => 0);
  const keys = kvKeys(votePrefix(poll));
  for (const key of keys) {
    const choice = Number(kvGetText(key));
    if (Number.isInteger(choice) && choice >= 1 && choice <= counts.length) {
      counts[choice - 1] += 1;
    }
  }
  return { counts, keys };
}

function standings(poll, counts) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) {
    return 'No votes.';
  }
  const parts = poll.options.map((option, i) => {
    const pct = Math.round((100 * counts[i]) / total);
    return `${option} ${counts[i]} (${pct}%)`;
  });
  const best = Math.max(...counts);
  const winners = poll.options.filter((_, i) => counts[i] === best);
  const verdict = winners.length === 1 ? `Winner: ${winners[0]}.` : `Tie: ${winners.join(', ')}.`;
  return `${parts.join(', ')}. ${verdict}`;
}

function open(payload) {
  const existing = currentPoll();
  if (existing) {
    fail(`poll #${existing.id} is still open; close it first`);
  }
  const question = typeof payload.question === 'string' ? payload.question.trim() : '';
  if (!question) {
    fail('`open` needs a "question"');
  }
  const maxOptions = intSetting('max-options', 10, 2, 50);
  const options = Array.isArray(payload.options)
    ? payload.options.map((o) => String(o).trim()).filter((o) => o.length > 0)
    : [];
  if (options.length < 2 || options.length > maxOptions) {
    fail(`\`open\` needs 2 to ${maxOptions} "options"`);
  }
  const lowered = options.map((o) => o.toLowerCase());
  if (new Set(lowered).size !== lowered.length) {
    fail('the options must differ');
  }
  const id = Number(kvGetText('next-id') || '0') + 1;
  kvSet('next-id', String(id));
  const poll = { id, question, options };
  kvSet('poll', poll);
  info(`opened poll #${id} with ${options.length} options`);
  send(
    announceChannel(),
    `Poll #${id}: ${question} ${optionList(poll)}. Vote with !vote <number>.`,
    { key: `poll-${id}-open` },
  );
}

// The option a voter means: its number or its text (any case). 1-based.
function choose(poll, choice) {
  const text = String(choice === undefined || choice === null ? '' : choice).trim();
  const n = Number(text);
  if (text !== '' && Number.isInteger(n)) {
    return n >= 1 && n <= poll.options.length ? n : undefined;
  }
  const i = poll.options.findIndex((o) => o.toLowerCase() === text.toLowerCase());
  return i >= 0 ? i + 1 : undefined;
}

// Records a vote; returns the option chosen, or fails with a reason.
function vote(voter, choice) {
  const poll = currentPoll();
  if (!poll) {
    fail('no poll is open');
  }
  if (typeof voter !== 'string' || voter === '') {
    fail('a vote needs a "voter"');
  }
  const n = choose(poll, choice);
  if (n === undefined) {
    fail(`\`${choice}\` is not an option of poll #${poll.id}; choose 1 to ${poll.options.length}`);
  }
  kvSet(`${votePrefix(poll)}${voter}`, String(n));
  info(`${voter} voted for ${poll.options[n - 1]} in poll #${poll.id}`);
  return { poll, option: poll.options[n - 1] };
}

// Closing runs in an order that a repeated close cannot spoil: the votes
// are tallied, the result stored and announced (under an idempotency key)
// while the poll is still open and every vote still there, so a close that
// dies before the poll is marked closed is simply done again with the same
// votes. Only then is the poll marked closed, and its votes are deleted in
// batches of `cleanup-per-event`, this close and later ones continuing, so
// no event does unbounded work and overruns its deadline.
function close() {
  const poll = currentPoll();
  if (!poll) {
    if (cleanupPending()) {
      cleanUp();
      return;
    }
    fail('no poll is open');
  }
  const { counts, keys } = tally(poll);
  kvSet(`result/${poll.id}`, { question: poll.question, options: poll.options, counts });
  send(announceChannel(), `Poll #${poll.id} closed: ${poll.question} ${standings(poll, counts)}`, {
    key: `poll-${poll.id}-results`,
  });
  // The marker first: a close that dies between the two leaves a closed
  // poll whose votes are still to delete, never an open poll without votes.
  kvSet(`closing/${poll.id}`, '1');
  kvDelete('poll');
  info(`closed poll #${poll.id}: ${keys.length} votes`);
  cleanUp();
}

function cleanupPending() {
  return kvKeys('closing/').length > 0;
}

// Deletes at most `cleanup-per-event` votes of closed polls.
function cleanUp() {
  let budget = intSetting('cleanup-per-event', 100, 1, 1000);
  for (const marker of host('kv list closing/', () => kv.listKeys('closing/', 100))) {
    if (budget === 0) {
      return;
    }
    const id = marker.slice('closing/'.length);
    const prefix = `vote/${id}/`;
    const batch = host(`kv list ${prefix}`, () => kv.listKeys(prefix, budget));
    for (const key of batch) {
      kvDelete(key);
    }
    budget -= batch.length;
    if (budget > 0) {
      // Fewer than asked for: none are left.
      kvDelete(marker);
      info(`poll #${id}: all votes removed`);
    } else {
      info(`poll #${id}: removed ${batch.length} votes, more to remove`);
    }
  }
}

// Logs a closed poll's stored result (the last one when no "poll" is given).
function result(payload) {
  const id = payload.poll === undefined ? Number(kvGetText('next-id') || '0') : Number(payload.poll);
  const stored = Number.isInteger(id) && id > 0 ? kvGetJson(`result/${id}`) : undefined;
  if (!stored) {
    fail(`poll #${payload.poll === undefined ? id : payload.poll} has no result`);
  }
  info(`result of poll #${id}: ${stored.question} ${standings(stored, stored.counts)}`);
}

function status() {
  const poll = currentPoll();
  if (!poll) {
    return 'No poll is open.';
  }
  const { counts } = tally(poll);
  return `Poll #${poll.id}: ${poll.question} ${optionList(poll)}. So far: ${standings(poll, counts)}`;
}

// --- events -----------------------------------------------------------------

function parsePayload(event) {
  if (event.payload.trim() === '') {
    return {};
  }
  try {
    const value = JSON.parse(event.payload);
    return value && typeof value === 'object' ? value : {};
  } catch (err) {
    fail(`\`${event.name}\`: the payload is not JSON: ${err.message}`);
  }
}

function onCustom(event) {
  const payload = parsePayload(event);
  switch (event.name) {
    case 'open':
      return open(payload);
    case 'vote':
      vote(payload.voter, payload.option);
      return;
    case 'close':
      return close();
    case 'status':
      info(status());
      return;
    case 'result':
      return result(payload);
    default:
      fail(`unknown event \`${event.name}\`; this bot knows open, vote, close, status and result`);
  }
}

function onChat(msg) {
  const prefix = setting('prefix', '!');
  const text = msg.text.trim();
  if (!text.startsWith(prefix)) {
    return;
  }
  const [command, ...rest] = text.slice(prefix.length).split(/\s+/);
  const reply = (answer) =>
    send(msg.channel, answer, {
      replyTo: msg.conversation,
      key: msg.messageId === undefined ? undefined : `reply-${msg.messageId}`,
    });
  const who = msg.senderName || msg.senderId;
  if (command === 'vote') {
    let answer;
    try {
      const { poll, option } = vote(msg.senderId, rest.join(' '));
      answer = `${who}: your vote for ${option} in poll #${poll.id} is counted.`;
    } catch (err) {
      if (!(err instanceof Failure)) {
        throw err;
      }
      answer = `${who}: ${err.message}.`;
    }
    reply(answer);
  } else if (command === 'poll') {
    reply(status());
  }
}

export const handler = {
  describe() {
    return {
      name: 'poll',
      version: VERSION,
      channels: ['announcements', 'lobby'],
      events: ['custom', 'chat-message'],
      schedules: [],
    };
  },

  handle(event) {
    try {
      if (event.tag === 'custom') {
        onCustom(event.val);
      } else if (event.tag === 'chat-message') {
        onChat(event.val);
      }
    } catch (err) {
      // A thrown string becomes handle's `err`; an Error object would trap.
      throw err instanceof Failure ? err.message : `internal error: ${describeError(err)}`;
    }
  },
};
