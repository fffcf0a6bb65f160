declare module 'botbox:bot/types@0.1.0' {
  /**
   * A file that lives at a URL the provider's clients can fetch.
   * 
   * Each provider reads the fields it knows and ignores the rest:
   * Easemob `img`/`audio`/`video`/`file` bodies, Tencent `TIMImageElem`,
   * `TIMSoundElem`, `TIMVideoFileElem`, `TIMFileElem`.
   */
  export interface Media {
    /**
     * Where the file is. Required by every provider.
     */
    url: string,
    /**
     * The file name shown to users (Easemob `filename`, Tencent `FileName`).
     */
    filename?: string,
    /**
     * The file's share secret issued by the provider's file upload
     * (Easemob `secret`). This is a per-file token, not a credential.
     */
    shareSecret?: string,
    /**
     * Size of the file in bytes (Easemob `file_length`, Tencent `FileSize`).
     */
    sizeBytes?: bigint,
    /**
     * Format or extension, such as "jpg" or "mp4" (Tencent `ImageFormat`, `VideoFormat`).
     */
    format?: string,
    /**
     * Pixel width of an image or video.
     */
    width?: number,
    /**
     * Pixel height of an image or video.
     */
    height?: number,
    /**
     * Length of audio or video in whole seconds (Easemob `length`, Tencent `Second`).
     */
    durationSecs?: number,
    /**
     * A preview image for a video (Easemob `thumb`, Tencent `ThumbUrl`).
     */
    thumbnailUrl?: string,
    /**
     * The preview image's share secret (Easemob `thumb_secret`).
     */
    thumbnailShareSecret?: string,
  }
  /**
   * A point on the map (Easemob `loc`, Tencent `TIMLocationElem`).
   */
  export interface Location {
    /**
     * Degrees north, -90 to 90.
     */
    latitude: number,
    /**
     * Degrees east, -180 to 180.
     */
    longitude: number,
    /**
     * A human-readable address or description.
     */
    address?: string,
  }
  /**
   * Structured data for client apps rather than for people.
   */
  export interface CustomPayload {
    /**
     * A short event name (Easemob `customEvent`, Tencent `Desc`).
     */
    event: string,
    /**
     * The data itself, usually JSON (Easemob `customExts` when it is a
     * JSON object of strings, Tencent `Data`).
     */
    data: string,
  }
  /**
   * What a message carries. A channel accepts only the kinds its provider
   * supports; `channels()` lists them.
   */
  export type Content = ContentText | ContentCustom | ContentCommand | ContentImage | ContentFile | ContentAudio | ContentVideo | ContentLocation;
  /**
   * Plain text. BigBlueButton splits text over 500 characters into
   * ordered parts at word boundaries.
   */
  export interface ContentText {
    tag: 'text',
    val: string,
  }
  /**
   * Structured data for client apps (Tencent `TIMCustomElem`, Easemob `custom`).
   */
  export interface ContentCustom {
    tag: 'custom',
    val: CustomPayload,
  }
  /**
   * A silent command that clients act on and do not show (Easemob `cmd` action).
   */
  export interface ContentCommand {
    tag: 'command',
    val: string,
  }
  export interface ContentImage {
    tag: 'image',
    val: Media,
  }
  export interface ContentFile {
    tag: 'file',
    val: Media,
  }
  export interface ContentAudio {
    tag: 'audio',
    val: Media,
  }
  export interface ContentVideo {
    tag: 'video',
    val: Media,
  }
  export interface ContentLocation {
    tag: 'location',
    val: Location,
  }
  /**
   * How important a message is, where the provider ranks messages
   * (Easemob `chatroom_msg_level`: high, normal, low).
   * # Variants
   * 
   * ## `"low"`
   * 
   * ## `"normal"`
   * 
   * ## `"high"`
   */
  export type Priority = 'low' | 'normal' | 'high';
  /**
   * Presentation options that only some providers honour. A provider
   * that does not know an option ignores it; an option a provider knows
   * but whose value breaks its rules makes `send-broadcast` fail with
   * `invalid`.
   */
  export interface MessageOptions {
    /**
     * Show as a system notice rather than a chat line (Bitrix24 `SYSTEM`).
     */
    system: boolean,
    /**
     * Turn links into rich previews (Bitrix24 `URL_PREVIEW`); provider default when absent.
     */
    urlPreview?: boolean,
    /**
     * Rich attachment as JSON, at most 30 KB (Bitrix24 `ATTACH`).
     */
    attach?: string,
    /**
     * Buttons under the message as JSON, at most 30 KB (Bitrix24 `KEYBOARD`).
     */
    keyboard?: string,
    /**
     * Context menu as JSON, at most 30 KB (Bitrix24 `MENU`).
     */
    menu?: string,
    /**
     * Message priority (Easemob chat-room broadcasts).
     */
    priority?: Priority,
  }
  /**
   * One message for one channel.
   */
  export interface Message {
    /**
     * The operator-defined channel name. The only address a plugin knows.
     */
    channel: string,
    /**
     * What to send.
     */
    content: Content,
    /**
     * Display name or account of the sender, where the provider has one
     * (BigBlueButton `userName` ≤ 255 chars, Tencent `From_Account`,
     * Easemob `from`). The channel's default applies when absent.
     */
    sender?: string,
    /**
     * A JSON object carried beside the content for client apps
     * (Easemob `ext`, Tencent `CloudCustomData`).
     */
    extra?: string,
    /**
     * The plugin's own key for this message. A second `send-broadcast`
     * with the same key on the same channel returns the first receipt
     * instead of sending twice.
     */
    idempotencyKey?: string,
    /**
     * Answer into one conversation of the channel instead of its
     * configured targets: the `conversation` of a `chat-message` event
     * (a BigBlueButton meeting, a Tencent group, an Easemob room or a
     * Bitrix24 dialog). Only conversations the plugin has been told about
     * are accepted.
     */
    replyTo?: string,
    /**
     * Provider-specific presentation options.
     */
    options?: MessageOptions,
  }
  /**
   * Why `send-broadcast` refused a message. Nothing was queued.
   */
  export type BroadcastError = BroadcastErrorNotGranted | BroadcastErrorUnknownChannel | BroadcastErrorInvalid | BroadcastErrorUnsupported | BroadcastErrorQuotaExhausted | BroadcastErrorBacklogFull | BroadcastErrorInternal;
  /**
   * The plugin did not ask for this channel, or the operator did not grant it.
   */
  export interface BroadcastErrorNotGranted {
    tag: 'not-granted',
    val: string,
  }
  /**
   * No channel by this name exists.
   */
  export interface BroadcastErrorUnknownChannel {
    tag: 'unknown-channel',
    val: string,
  }
  /**
   * The message breaks the channel provider's rules (length, JSON, fields).
   */
  export interface BroadcastErrorInvalid {
    tag: 'invalid',
    val: string,
  }
  /**
   * The channel's provider cannot carry this kind of content.
   */
  export interface BroadcastErrorUnsupported {
    tag: 'unsupported',
    val: string,
  }
  /**
   * The plugin's broadcast budget or the provider's quota is used up.
   * The value is the number of milliseconds until it resets.
   */
  export interface BroadcastErrorQuotaExhausted {
    tag: 'quota-exhausted',
    val: bigint,
  }
  /**
   * Too many messages are waiting for this channel; try again later.
   */
  export interface BroadcastErrorBacklogFull {
    tag: 'backlog-full',
  }
  /**
   * The host could not accept the message (for example the outbox
   * could not be written). The text says what happened.
   */
  export interface BroadcastErrorInternal {
    tag: 'internal',
    val: string,
  }
  /**
   * Proof that the host accepted a message: it is persisted and will be
   * delivered. Its outcome comes back later as a `delivery` event.
   */
  export interface Receipt {
    /**
     * The host's id for this message; delivery reports carry it.
     */
    id: string,
    /**
     * Milliseconds from now until the host expects to send it.
     */
    etaMs: bigint,
  }
  /**
   * The kinds of content a channel can carry.
   * # Variants
   * 
   * ## `"text"`
   * 
   * ## `"custom"`
   * 
   * ## `"command"`
   * 
   * ## `"image"`
   * 
   * ## `"file"`
   * 
   * ## `"audio"`
   * 
   * ## `"video"`
   * 
   * ## `"location"`
   */
  export type ContentKind = 'text' | 'custom' | 'command' | 'image' | 'file' | 'audio' | 'video' | 'location';
  /**
   * A channel this plugin may use, as `channels()` reports it.
   */
  export interface ChannelInfo {
    /**
     * The operator's name for the channel.
     */
    name: string,
    /**
     * The provider kind behind it, such as "bigbluebutton" or "console".
     * Never an account, URL or credential.
     */
    providerKind: string,
    /**
     * The content kinds the channel accepts.
     */
    accepts: Array<ContentKind>,
    /**
     * The longest text the provider takes in one message, in characters.
     * Longer text is split where the provider allows it, refused otherwise.
     */
    maxTextChars: number,
    /**
     * Whether longer text is split into ordered parts rather than refused.
     */
    splitsLongText: boolean,
  }
  /**
   * A chat message someone wrote, delivered by a provider webhook.
   */
  export interface ChatMessage {
    /**
     * The channel it arrived on.
     */
    channel: string,
    /**
     * Where it was said: pass this as `reply-to` to answer there.
     */
    conversation: string,
    /**
     * The provider's id for the author.
     */
    senderId: string,
    /**
     * The author's display name, when the provider sends one.
     */
    senderName?: string,
    /**
     * What they wrote.
     */
    text: string,
    /**
     * The provider's id for the message, when it has one.
     */
    messageId?: string,
    /**
     * When it was sent, in Unix milliseconds, when the provider says.
     */
    sentAtMs?: bigint,
  }
  /**
   * What happened in a BigBlueButton meeting.
   * # Variants
   * 
   * ## `"started"`
   * 
   * ## `"ended"`
   * 
   * ## `"user-joined"`
   * 
   * ## `"user-left"`
   * 
   * ## `"recording-started"`
   * 
   * ## `"recording-stopped"`
   */
  export type MeetingEventKind = 'started' | 'ended' | 'user-joined' | 'user-left' | 'recording-started' | 'recording-stopped';
  /**
   * A BigBlueButton meeting lifecycle event.
   */
  export interface MeetingEvent {
    /**
     * The channel whose meetings this concerns.
     */
    channel: string,
    /**
     * What happened.
     */
    kind: MeetingEventKind,
    /**
     * The meeting; also usable as `reply-to`.
     */
    meetingId: string,
    /**
     * The meeting's name, when known.
     */
    meetingName?: string,
    /**
     * The user who joined or left.
     */
    userId?: string,
    /**
     * That user's display name.
     */
    userName?: string,
  }
  /**
   * The final outcome of a message.
   */
  export type DeliveryOutcome = DeliveryOutcomeDelivered | DeliveryOutcomePartiallyDelivered | DeliveryOutcomeFailed | DeliveryOutcomeCancelled;
  /**
   * Every part reached the provider.
   */
  export interface DeliveryOutcomeDelivered {
    tag: 'delivered',
  }
  /**
   * Some parts (meetings, dialogs, split parts) failed; the text says which and why.
   */
  export interface DeliveryOutcomePartiallyDelivered {
    tag: 'partially-delivered',
    val: string,
  }
  /**
   * Nothing was delivered; the text carries the provider's code and reason.
   */
  export interface DeliveryOutcomeFailed {
    tag: 'failed',
    val: string,
  }
  /**
   * An operator cancelled it before delivery.
   */
  export interface DeliveryOutcomeCancelled {
    tag: 'cancelled',
  }
  /**
   * What became of one of this plugin's receipts.
   */
  export interface DeliveryReport {
    /**
     * The receipt's id.
     */
    receiptId: string,
    /**
     * The channel it was sent to.
     */
    channel: string,
    /**
     * How it ended.
     */
    outcome: DeliveryOutcome,
    /**
     * How many provider calls it took.
     */
    attempts: number,
    /**
     * The provider's ids for what it delivered (message ids, sequence numbers).
     */
    providerIds: Array<string>,
  }
  /**
   * An event from the CLI (`botbox call`) or the admin API.
   */
  export interface CustomEvent {
    /**
     * A name the plugin understands.
     */
    name: string,
    /**
     * Its data, usually JSON.
     */
    payload: string,
  }
  /**
   * Something for the plugin to handle.
   */
  export type Event = EventChatMessage | EventMeeting | EventSchedule | EventDelivery | EventCustom;
  /**
   * A chat message from a provider webhook.
   */
  export interface EventChatMessage {
    tag: 'chat-message',
    val: ChatMessage,
  }
  /**
   * A BigBlueButton meeting lifecycle event.
   */
  export interface EventMeeting {
    tag: 'meeting',
    val: MeetingEvent,
  }
  /**
   * A schedule the plugin asked for and the operator granted fired;
   * the value is the schedule's name.
   */
  export interface EventSchedule {
    tag: 'schedule',
    val: string,
  }
  /**
   * The outcome of one of this plugin's receipts.
   */
  export interface EventDelivery {
    tag: 'delivery',
    val: DeliveryReport,
  }
  /**
   * An event from the CLI or the admin API.
   */
  export interface EventCustom {
    tag: 'custom',
    val: CustomEvent,
  }
  /**
   * The kinds of event, for a plugin to say which it wants.
   * # Variants
   * 
   * ## `"chat-message"`
   * 
   * ## `"meeting"`
   * 
   * ## `"schedule"`
   * 
   * ## `"delivery"`
   * 
   * ## `"custom"`
   */
  export type EventKind = 'chat-message' | 'meeting' | 'schedule' | 'delivery' | 'custom';
  /**
   * What a plugin asks for. The host grants the intersection of this and
   * what the operator configured; the rest is denied.
   */
  export interface Manifest {
    /**
     * A short human name for logs, such as "greeter".
     */
    name: string,
    /**
     * The plugin's own version string.
     */
    version: string,
    /**
     * Channels it wants to send to or hear from.
     */
    channels: Array<string>,
    /**
     * Event kinds it wants to receive.
     */
    events: Array<EventKind>,
    /**
     * Schedule names it wants fired (the operator defines their timing).
     */
    schedules: Array<string>,
  }
}
