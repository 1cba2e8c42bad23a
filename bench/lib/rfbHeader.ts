// What viewers send the target: its 16-byte header (mode + tag) and the echo probe's payload, framed as RFB
// client messages so they pass the control plane's RFB input parser and filters like a real viewer's bytes.
// Neither is user input (keys, pointer, clipboard): on a clustered control plane the first user input of a
// session each second is shared with the other replicas, which crashed the replica on the integration branch of
// 2026-12-02 (VncProxy's inputWatcher runs that NOTIFY with runSync; see bench/FINDINGS.md). The bytes' path
// through the proxy, the agent and the port-forward is the same for every message type.
export const HEADER = 16

/**
 * The target speaks first, as a VNC server does ("RFB 003.008\n"), and viewers send their header only once they
 * have it: bytes a viewer sends before its tunnel is open are not relayed (seen on 2026-12-02; a real RFB client
 * never sends before the server's version), so a header sent at once could be lost and the stream never start.
 */
export const GREETING = Buffer.from("RFB 003.008\n")

/** RFB client start (version 3.8, security type None, ClientInit) and a SetEncodings of 4 encodings: the header. */
export const RFB_START = Buffer.concat([Buffer.from("RFB 003.008\n"), Buffer.from([1, 1, 2, 0, 0, 4])])
export const rfbHeader = (mode: "B" | "E" | "F", tag: string) => Buffer.concat([RFB_START, Buffer.from((mode + tag).padEnd(HEADER, " ").slice(0, HEADER))])

/** `n` FramebufferUpdateRequests (10 bytes each), the echo probe's payload. */
export const updateRequests = (n: number) => {
  const b = Buffer.alloc(10 * n)
  for (let i = 0; i < n; i++) b.set([3, 1, 0, i, 0, 0, 0, 64, 0, 48], 10 * i)
  return b
}
