// Every wire limit in one place. Both sides import these; each has a boundary test.

/** Largest text (JSON control) frame, in UTF-8 bytes: a `hello` or `list_sessions` result with a few thousand sessions fits; a runaway message does not. */
export const MAX_TEXT_FRAME_BYTES = 1024 * 1024

/** Largest payload of one binary tunnel frame: small enough that one tunnel cannot hog the socket for long, big enough to amortise the header. */
export const MAX_BINARY_PAYLOAD_BYTES = 64 * 1024

/** Fixed header of a binary frame: 1 byte kind + 4 bytes tunnel id (big-endian). */
export const BINARY_HEADER_BYTES = 5

/** Largest WebSocket frame either side accepts; anything larger is closed with 1009 (message too big). */
export const MAX_FRAME_BYTES = Math.max(MAX_TEXT_FRAME_BYTES, BINARY_HEADER_BYTES + MAX_BINARY_PAYLOAD_BYTES)

/** Default per-tunnel credit window: bytes a sender may have in flight unacknowledged; 1 MiB keeps a VNC stream busy across a WAN hop without letting one viewer buffer unbounded data. */
export const DEFAULT_WINDOW_BYTES = 1024 * 1024

/** Smallest window a side may configure: below one full binary frame a tunnel could never send a maximal chunk. */
export const MIN_WINDOW_BYTES = MAX_BINARY_PAYLOAD_BYTES

/** Largest window a side may configure: caps the memory one tunnel can pin on the receiver. */
export const MAX_WINDOW_BYTES = 16 * 1024 * 1024

/** Default link window the control plane announces: one default tunnel window, so a lone tunnel is never held back by it, while the queue on a shared agent link stays one window deep however many tunnels stream. */
export const DEFAULT_LINK_WINDOW_BYTES = DEFAULT_WINDOW_BYTES

/** Smallest link window a control plane may announce in `welcome`: one maximal data frame must always fit. */
export const MIN_LINK_WINDOW_BYTES = MAX_BINARY_PAYLOAD_BYTES

/** Largest link window: the most data bytes an agent may have written to its socket that the control plane has not read yet. */
export const MAX_LINK_WINDOW_BYTES = 64 * 1024 * 1024

/** Most tunnels open at once on one agent connection: bounds per-connection memory (tunnels x window). */
export const MAX_TUNNELS_PER_CONNECTION = 256

/** Most bytes either side buffers for one connection across all tunnels before it stops reading its sources. */
export const MAX_BUFFERED_BYTES_PER_CONNECTION = 64 * 1024 * 1024

/** Most sessions one `hello` inventory or `list_sessions` result may carry; a larger fleet needs another agent. */
export const MAX_SESSIONS_PER_MESSAGE = 4096
