// @streamspace/vnc-testserver: a small RFB server with a synthetic desktop, and a minimal RFB client.
export {
  type RunningVncTestServer,
  type StartOptions,
  type VncTestServerOptions,
  start,
  VncTestServer,
  VncTestServerError
} from "./VncTestServer.ts"
export type { Click, DesktopState, KeyRecord, ServerState } from "./VncTestServer.ts"
export {
  defaultPixelFormat,
  ENCODING_COPYRECT,
  ENCODING_HEXTILE,
  ENCODING_RAW,
  ENCODING_RRE,
  type FramebufferUpdate,
  type PixelFormat,
  type Rect,
  RfbClient,
  type RfbClientOptions,
  type UpdateRect
} from "./RfbClient.ts"
export type { LogFn, LogLevel } from "./internal/RfbServer.ts"
export { ENCODING_DESKTOP_SIZE, ENCODING_EXTENDED_DESKTOP_SIZE, MAX_DESKTOP_SIDE } from "./internal/desktopSize.ts"
export { decodePng, type Image } from "./png.ts"
