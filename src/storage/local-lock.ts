/** Each key's last holder: a promise that settles when it is done. */
const tails = new Map<string, Promise<void>>();

/**
 * Runs `fn` after every earlier `fn` of the same key in this process has settled, one at a time.
 * No wait of its own: each holder's work is bounded by the store's timeouts.
 */
export function withLocalLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const result = (tails.get(key) ?? Promise.resolve()).then(fn);
  const settled = result.then(
    () => {},
    () => {},
  );
  tails.set(key, settled);
  // The last holder leaves no entry behind.
  void settled.then(() => {
    if (tails.get(key) === settled) tails.delete(key);
  });
  return result;
}
