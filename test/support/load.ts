/**
 * Appends `total` events to `subject/<writer>/<n>` from `writers` concurrent REST clients, each
 * posting small JSON batches of varying size (1–5); resolves with every id the server returned.
 */
export async function appendConcurrently(
  baseUrl: string,
  subject: string,
  total: number,
  writers: number,
): Promise<number[]> {
  const appends = Array.from({ length: writers }, async (_, w) => {
    const ids: number[] = [];
    const mine = Math.floor(total / writers) + (w < total % writers ? 1 : 0);
    let n = 0;
    while (n < mine) {
      const size = Math.min(1 + ((n * 7 + w) % 5), mine - n);
      const events = Array.from({ length: size }, (_, k) => ({
        source: `w${w}`,
        type: "t",
        subject: `${subject}/${w}/${n + k}`,
      }));
      const res = await fetch(`${baseUrl}/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(events),
      });
      if (res.status !== 200) throw new Error(`append failed: ${res.status} ${await res.text()}`);
      ids.push(...((await res.json()) as { ids: number[] }).ids);
      n += size;
    }
    return ids;
  });
  return (await Promise.all(appends)).flat().sort((a, b) => a - b);
}
