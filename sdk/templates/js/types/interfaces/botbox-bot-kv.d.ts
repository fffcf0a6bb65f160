declare module 'botbox:bot/kv@0.1.0' {
  /**
   * The value stored under a key, if any.
   */
  export function get(key: string): Uint8Array | undefined;
  /**
   * Store a value, replacing any old one.
   */
  export function set(key: string, value: Uint8Array): void;
  /**
   * Remove a key. Removing a missing key is not an error.
   */
  export { _delete as delete };
  function _delete(key: string): void;
  /**
   * The keys that start with a prefix, sorted, at most `limit` of them.
   */
  export function listKeys(prefix: string, limit: number): Array<string>;
  /**
   * Why a kv call failed.
   */
  export type KvError = KvErrorKeyTooLong | KvErrorValueTooLarge | KvErrorQuotaExceeded | KvErrorInternal;
  /**
   * The key is longer than the host allows; the value is the limit in bytes.
   */
  export interface KvErrorKeyTooLong {
    tag: 'key-too-long',
    val: number,
  }
  /**
   * The value is longer than the host allows; the value is the limit in bytes.
   */
  export interface KvErrorValueTooLarge {
    tag: 'value-too-large',
    val: number,
  }
  /**
   * The plugin's namespace would grow past its quota; the value is the quota in bytes.
   */
  export interface KvErrorQuotaExceeded {
    tag: 'quota-exceeded',
    val: bigint,
  }
  /**
   * The store failed; the text says how.
   */
  export interface KvErrorInternal {
    tag: 'internal',
    val: string,
  }
}
