export const PROTOCOL_VERSIONS = ["v1"] as const
